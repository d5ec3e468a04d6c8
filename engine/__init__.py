"""A declarative routing engine for LLM calls.

The public API lives here and nothing else: run, arun, stream, astream, explain, Engine
and the error tree.
"""

from engine.errors import *  # noqa: F403
from engine.errors import __all__ as _error_names

__all__ = [*_error_names]

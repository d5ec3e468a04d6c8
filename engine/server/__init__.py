"""The OpenAI-compatible HTTP server: the only package that imports the web framework.

`create_app(engine, settings)` builds the ASGI app; `python -m engine serve` runs it.
"""

from engine.server.app import create_app
from engine.server.settings import ServerSettings, load_settings

__all__ = ["ServerSettings", "create_app", "load_settings"]

"""A declarative routing engine for LLM calls.

The public API lives here and nothing else: run, arun, stream, astream, explain, Engine,
Conversation, the result types and the error tree.

    import engine
    r = engine.run({"messages": [{"role": "user", "content": "hi"}]}, policy="balanced")
    eng = engine.Engine.from_config("path/to/config")      # models.yaml + routes/
"""

from engine.assemble import Engine, arun, astream, default_engine, explain, run, stream
from engine.errors import *  # noqa: F403
from engine.errors import __all__ as _error_names
from engine.messages import Request
from engine.result import Response, StreamEvent
from engine.runtime.conversation import Conversation

__all__ = [
    "Conversation",
    "Engine",
    "Request",
    "Response",
    "StreamEvent",
    "arun",
    "astream",
    "default_engine",
    "explain",
    "run",
    "stream",
    *_error_names,
]

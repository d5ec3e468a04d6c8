"""POST /v1/chat/completions: the engine's own API, as one more `Surface`.

The chat request is the engine's request, so nothing is translated on the way in; the
answer is `Response.to_openai()` (with `function_call` for a legacy `functions` caller),
streams are `chat.completion.chunk` lines and errors OpenAI's error object. Serving it
through the same `SurfaceRoute` as Anthropic Messages, Responses and Completions means
every API takes one path through the server: the same steps, headers and metrics, and the
same cost per request apart from its own translation.
"""

from __future__ import annotations

import time
from typing import Any

from engine.messages import Request
from engine.result import Response
from engine.server.errors import HTTPError
from engine.server.exchange import as_function_call
from engine.server.sse import ChunkEncoder

__all__ = ["CHAT_PATH", "ChatSurface"]

CHAT_PATH = "/v1/chat/completions"


class ChatSurface:
    """The chat-completions surface (see the module docstring)."""

    path = CHAT_PATH

    def to_chat(self, data: dict[str, Any]) -> dict[str, Any]:
        return data

    def answer(self, resp: Response, data: dict[str, Any]) -> dict[str, Any]:
        body = resp.to_openai()
        if not body["id"]:
            body["id"] = f"chatcmpl-{time.perf_counter_ns():x}"
        if "functions" in data:
            as_function_call(body)
        return body

    def encoder(self, data: dict[str, Any], req: Request) -> ChunkEncoder:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return ChunkEncoder(include_usage, "functions" in data)

    def error_body(self, error: HTTPError) -> dict[str, Any]:
        return error.body()

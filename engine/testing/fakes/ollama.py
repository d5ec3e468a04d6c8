"""Fake Ollama native API (`POST /api/chat`).

Streams by default (as Ollama does when `stream` is omitted) as NDJSON
(`application/x-ndjson`): one line per piece with `done: false`, tool calls in their own
line with empty content, and a final `done: true` line with `done_reason` and the counts
(`prompt_eval_count`, `eval_count`, durations in nanoseconds). Errors are
`{"error": "text"}` (404 `model "x" not found, try pulling it first`), and an error inside
a 200 stream is an extra `{"error": ...}` line. No auth unless `api_key` is given (then a
Bearer token is required, like ollama.com). No rate-limit headers, like the real server.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from engine.providers.mock import JSON_OBJECT, ScriptedAnswer

from ._server import Ask, BadRequest, FakeUpstream, json_response, split_text
from .openai import scripted_tools

__all__ = ["FakeOllama"]


def _line(data: dict[str, Any]) -> bytes:
    return orjson.dumps(data) + b"\n"


def _schema(fmt: Any) -> dict[str, Any] | None:
    """`format`: a JSON Schema, or "json" (JSON mode: JSON_OBJECT)."""
    if isinstance(fmt, dict):
        return fmt
    return JSON_OBJECT if fmt == "json" else None


class FakeOllama(FakeUpstream):
    """`POST {url}/api/chat`; `url` is the origin, as the SDK's host."""

    name = "ollama"
    stream_content_type = "application/x-ndjson"

    def __init__(
        self, *, api_key: str | None = None, seed: int = 0, models: tuple[str, ...] = ()
    ) -> None:
        super().__init__(api_key=api_key, seed=seed)
        self.models = models

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/api/chat", self.handle)
        app.router.add_post("/api/embed", self.handle_embed)

    def parse_embed(self, request: web.Request, body: Any) -> tuple[str, list[str], int | None]:
        if not isinstance(body, dict) or not body.get("model"):
            raise BadRequest("model is required")
        texts = body.get("input")
        texts = texts if isinstance(texts, list) else [texts]
        return str(body["model"]), [str(t) for t in texts], body.get("dimensions")

    def render_embed(self, model: str, vectors: list[list[float]], tokens: int) -> dict[str, Any]:
        return {"model": model, "embeddings": vectors, "prompt_eval_count": tokens}

    def auth_error(self, request: web.Request) -> web.Response | None:
        if self.api_key is None:
            return None
        auth = request.headers.get("Authorization", "")
        if auth != f"Bearer {self.api_key}":
            return self.error_response(401, "unauthorized", None, {})
        return None

    def error_message(self, status: int) -> str:
        return {
            404: 'model "llama3" not found, try pulling it first',
            500: "the model failed to generate a response",
        }.get(status, super().error_message(status))

    def error_response(
        self, status: int, message: str, code: str | None, headers: Mapping[str, str]
    ) -> web.Response:
        return json_response(status, {"error": message}, headers)

    def stream_error_frame(self, message: str, code: str | None) -> bytes:
        return _line({"error": message})

    def malformed_frame(self) -> bytes:
        return b'{"model": "x", "message": {oops\n'

    def parse(self, request: web.Request, body: Any) -> Ask:
        if not isinstance(body, dict):
            raise BadRequest("invalid character looking for beginning of value")
        model = body.get("model")
        if not model:
            raise BadRequest("model is required")
        if self.models and model not in self.models:
            raise _ModelNotFound(str(model))
        messages = body.get("messages") or []
        if not messages:
            raise BadRequest("messages is required")
        last = messages[-1]
        users = [m for m in messages if m.get("role") == "user"]
        options = body.get("options") or {}
        return Ask(
            model=str(model),
            stream=body.get("stream", True) is not False,
            prompt_texts=[str(m.get("content") or "") for m in messages],
            last_user=str(users[-1].get("content") or "") if users else "",
            tool_result=str(last.get("content")) if last.get("role") == "tool" else None,
            tools=scripted_tools(body.get("tools")),
            tool_choice=None,
            max_tokens=options.get("num_predict"),
            schema=_schema(body.get("format")),
        )

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            return await super().handle(request)
        except _ModelNotFound as exc:
            return self.error_response(
                404, f'model "{exc}" not found, try pulling it first', None, {}
            )

    def _base(self, ask: Ask) -> dict[str, Any]:
        return {"model": ask.model, "created_at": datetime.now(UTC).isoformat()}

    def _final(self, ask: Ask, answer: ScriptedAnswer, message: dict[str, Any]) -> dict[str, Any]:
        return {
            **self._base(ask),
            "message": message,
            "done": True,
            "done_reason": "length" if answer.finish == "length" else "stop",
            "total_duration": 4883583458,
            "load_duration": 1334875,
            "prompt_eval_count": answer.input_tokens,
            "prompt_eval_duration": 342546000,
            "eval_count": answer.output_tokens,
            "eval_duration": 4535599000,
        }

    def _calls(self, answer: ScriptedAnswer) -> list[dict[str, Any]]:
        return [
            {
                "id": c.id,
                "function": {"index": i, "name": c.name, "arguments": json.loads(c.arguments)},
            }
            for i, c in enumerate(answer.calls)
        ]

    def render(self, ask: Ask, answer: ScriptedAnswer) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": answer.text}
        if answer.calls:
            message["tool_calls"] = self._calls(answer)
        return self._final(ask, answer, message)

    def frames(self, ask: Ask, answer: ScriptedAnswer) -> tuple[list[bytes], list[bytes]]:
        out = [
            _line(
                {
                    **self._base(ask),
                    "message": {"role": "assistant", "content": piece},
                    "done": False,
                }
            )
            for piece in split_text(answer.text)
        ]
        if answer.calls:
            message = {"role": "assistant", "content": "", "tool_calls": self._calls(answer)}
            out.append(_line({**self._base(ask), "message": message, "done": False}))
        final = self._final(ask, answer, {"role": "assistant", "content": ""})
        return out, [_line(final)]


class _ModelNotFound(Exception):
    pass

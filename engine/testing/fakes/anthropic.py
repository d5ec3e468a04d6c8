"""Fake Anthropic Messages API (`POST /v1/messages`).

Requires `x-api-key` and `anthropic-version`, rejects a body without `max_tokens`, answers
with `message` objects (text and `tool_use` blocks, split usage), streams the named event
sequence of the SDK's own fixtures (`message_start`, `content_block_start`, `ping`,
`content_block_delta` with `text_delta` / `input_json_delta`, `content_block_stop`,
`message_delta`, `message_stop`), reports errors as `{"type": "error", "error": {...}}`
(529 `overloaded_error` included, and `event: error` inside a 200 stream), and sends
`request-id` and `anthropic-ratelimit-*` headers with RFC 3339 resets.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from engine.providers.mock import ScriptedAnswer, ScriptedTool

from ._server import Ask, BadRequest, FakeUpstream, json_response, split_text, sse, text_of

__all__ = ["FakeAnthropic"]

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}


def _event(data: dict[str, Any]) -> bytes:
    """One stream frame: Anthropic names every event after its data's `type`."""
    return sse(data, data["type"])


def _tool_result(message: Any) -> str | None:
    if not isinstance(message, dict) or message.get("role") != "user":
        return None
    content = message.get("content")
    if not isinstance(content, list):
        return None
    results = [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]
    return text_of(results[-1].get("content")) if results else None


class FakeAnthropic(FakeUpstream):
    """`POST {url}/v1/messages`; `url` is the origin, as the SDK's base_url."""

    name = "anthropic"
    call_id_prefix = "toolu_"

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self.handle)

    def auth_error(self, request: web.Request) -> web.Response | None:
        key = request.headers.get("x-api-key")
        if key is None and request.headers.get("Authorization", "").startswith("Bearer "):
            key = request.headers["Authorization"][7:]
        if key is None:
            return self.error_response(401, "x-api-key header is required", None, {})
        if self.api_key is not None and key != self.api_key:
            return self.error_response(401, f"invalid x-api-key: {key}", None, {})
        if not request.headers.get("anthropic-version"):
            return self.error_response(400, "anthropic-version: header is required", None, {})
        return None

    def _request_id(self) -> str:
        return f"req_fake{self._count:06d}"

    def _error_body(self, status: int, message: str, code: str | None) -> dict[str, Any]:
        kind = code or _TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        return {
            "type": "error",
            "error": {"type": kind, "message": message},
            "request_id": self._request_id(),
        }

    def error_response(
        self, status: int, message: str, code: str | None, headers: Mapping[str, str]
    ) -> web.Response:
        headers = {**headers, "request-id": self._request_id()}
        return json_response(status, self._error_body(status, message, code), headers)

    def stream_error_frame(self, message: str, code: str | None) -> bytes:
        body = self._error_body(
            529,
            message if message != "Internal server error" else "Overloaded",
            code or "overloaded_error",
        )
        return sse(body, "error")

    def malformed_frame(self) -> bytes:
        return b'event: content_block_delta\ndata: {"type": "content_block_delta", oops\n\n'

    def success_headers(self) -> dict[str, str]:
        used = self._count
        reset = (datetime.now(UTC) + timedelta(seconds=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
        p = "anthropic-ratelimit-"
        return {
            "request-id": self._request_id(),
            "anthropic-organization-id": "org-fake",
            p + "requests-limit": "50",
            p + "requests-remaining": str(max(0, 50 - used)),
            p + "requests-reset": reset,
            p + "input-tokens-limit": "30000",
            p + "input-tokens-remaining": str(max(0, 30000 - 100 * used)),
            p + "input-tokens-reset": reset,
            p + "output-tokens-limit": "8000",
            p + "output-tokens-remaining": "8000",
            p + "output-tokens-reset": reset,
            p + "tokens-limit": "38000",
            p + "tokens-remaining": str(max(0, 38000 - 100 * used)),
            p + "tokens-reset": reset,
        }

    def parse(self, request: web.Request, body: Any) -> Ask:
        if not isinstance(body, dict):
            raise BadRequest("There was an error parsing the body of your request.")
        for name in ("model", "max_tokens", "messages"):
            if name not in body:
                raise BadRequest(f"{name}: Field required")
        messages = body["messages"]
        if not isinstance(messages, list) or not messages:
            raise BadRequest("messages: at least one message is required")
        if messages[0].get("role") == "system":
            raise BadRequest('messages: Unexpected role "system". Use the top-level `system`.')
        choice = body.get("tool_choice") or {}
        named = {"auto": "auto", "any": "required", "none": "none"}.get(choice.get("type", ""))
        if choice.get("type") == "tool":
            named = choice.get("name")
        users = [m for m in messages if m.get("role") == "user" and _tool_result(m) is None]
        system = body.get("system")
        return Ask(
            model=str(body["model"]),
            stream=bool(body.get("stream")),
            prompt_texts=[text_of(system)] + [text_of(m.get("content")) for m in messages],
            last_user=text_of(users[-1].get("content")) if users else "",
            tool_result=_tool_result(messages[-1]),
            tools=[
                ScriptedTool(t["name"], t.get("input_schema") or {})
                for t in body.get("tools") or ()
            ],
            tool_choice=named,
            max_tokens=int(body["max_tokens"]),
        )

    def _blocks(self, answer: ScriptedAnswer) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = (
            [{"type": "text", "text": answer.text}] if answer.text else []
        )
        blocks += [
            {"type": "tool_use", "id": c.id, "name": c.name, "input": json.loads(c.arguments)}
            for c in answer.calls
        ]
        return blocks

    def _usage(self, answer: ScriptedAnswer, output: int) -> dict[str, Any]:
        # Anthropic: input_tokens excludes cache reads and writes; thinking is in output.
        extra = self.extra_usage
        return {
            "input_tokens": answer.input_tokens,
            "output_tokens": output,
            "cache_creation_input_tokens": extra.cache_write,
            "cache_read_input_tokens": extra.cache_read,
            "service_tier": "standard",
        }

    def render(self, ask: Ask, answer: ScriptedAnswer) -> dict[str, Any]:
        return {
            "id": f"msg_fake{self._count:06d}",
            "type": "message",
            "role": "assistant",
            "model": ask.model,
            "content": self._blocks(answer),
            "stop_reason": _STOP[answer.finish],
            "stop_sequence": None,
            "usage": self._usage(answer, answer.output_tokens + self.extra_usage.reasoning),
        }

    def frames(self, ask: Ask, answer: ScriptedAnswer) -> tuple[list[bytes], list[bytes]]:
        start = self.render(ask, answer) | {
            "content": [],
            "stop_reason": None,
            "usage": self._usage(answer, 1),
        }
        out = [_event({"type": "message_start", "message": start})]
        if answer.text:
            out += _block_frames(0, {"type": "text", "text": ""}, _text_deltas(answer.text))
        first = 1 if answer.text else 0
        for i, call in enumerate(answer.calls, start=first):
            block = {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}
            out += _block_frames(i, block, _json_deltas(call.arguments))
        delta = {"stop_reason": _STOP[answer.finish], "stop_sequence": None}
        usage = {"output_tokens": answer.output_tokens + self.extra_usage.reasoning}
        out.append(_event({"type": "message_delta", "delta": delta, "usage": usage}))
        return out, [_event({"type": "message_stop"})]


def _text_deltas(text: str) -> list[dict[str, Any]]:
    return [{"type": "text_delta", "text": piece} for piece in split_text(text)]


def _json_deltas(arguments: str) -> list[dict[str, Any]]:
    """A tool's input in fragments, led by an empty one as the service sends it."""
    return [
        {"type": "input_json_delta", "partial_json": p} for p in ["", *split_text(arguments, 7)]
    ]


def _block_frames(index: int, block: dict[str, Any], deltas: list[dict[str, Any]]) -> list[bytes]:
    """One content block: its start, (a ping after a text block's start), deltas, stop."""
    out = [_event({"type": "content_block_start", "index": index, "content_block": block})]
    if block["type"] == "text":
        out.append(_event({"type": "ping"}))
    out += [_event({"type": "content_block_delta", "index": index, "delta": d}) for d in deltas]
    out.append(_event({"type": "content_block_stop", "index": index}))
    return out

"""Anthropic Messages API answers: a `message` object, an error object and the stream's
named events, each as the engine's values (engine.providers.anthropic sends the requests).

Apart from the request side because the two change for different reasons: a new request
field touches only the body builder, a new event type or usage field only this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from engine.endpoints import Endpoint
from engine.errors import ProviderError
from engine.messages import (
    Chunk,
    FinishReason,
    ProviderResponse,
    RateLimitInfo,
    ToolCallDelta,
    ToolCallOut,
    Usage,
)

from .failures import classify, protocol_error

__all__ = ["OUTPUT_TOOL", "StreamState", "error_from_object", "on_event", "parse_message"]

#: The tool a structured answer is forced through (`response_format`): its input is the
#: answer, returned as the message's text and never as a tool call.
OUTPUT_TOOL = "structured_output"

_FINISH: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_STATUS_OF_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


def _usage(data: Any, output: int | None = None) -> Usage:
    if not isinstance(data, dict):
        return Usage(output_tokens=output or 0)
    cache_read = int(data.get("cache_read_input_tokens") or 0)
    cache_write = int(data.get("cache_creation_input_tokens") or 0)
    return Usage(
        input_tokens=int(data.get("input_tokens") or 0) + cache_read + cache_write,
        output_tokens=int(data.get("output_tokens") or 0) if output is None else output,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
    )


def _arguments(value: Any) -> str:
    return orjson.dumps(value if value is not None else {}).decode()


def parse_message(
    endpoint: Endpoint, data: dict[str, Any], rate: RateLimitInfo | None
) -> ProviderResponse:
    """A Messages API `message` object as a ProviderResponse."""
    blocks = data.get("content")
    if not isinstance(blocks, list):
        raise protocol_error(endpoint, "message has no content list")
    text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
    calls = tuple(
        ToolCallOut(str(b.get("id", "")), str(b.get("name", "")), _arguments(b.get("input")))
        for b in blocks
        if b.get("type") == "tool_use"
    )
    finish = _FINISH.get(str(data.get("stop_reason")), "stop")
    answer = [c for c in calls if c.name == OUTPUT_TOOL]
    if answer:  # the structured answer, given as the forced tool's input
        text, calls = answer[0].arguments, tuple(c for c in calls if c.name != OUTPUT_TOOL)
        finish = "tool_calls" if calls else ("stop" if finish == "tool_calls" else finish)
    return ProviderResponse(
        content=text if text or not calls else None,
        tool_calls=calls,
        finish_reason=finish,
        usage=_usage(data.get("usage")),
        upstream_model=str(data.get("model") or endpoint.upstream_model),
        response_id=str(data.get("id") or ""),
        rate_limit=rate,
    )


def error_from_object(
    endpoint: Endpoint, status: int, data: dict[str, Any], rate: RateLimitInfo | None
) -> ProviderError:
    """Classify an Anthropic error object; status 0 (inside a stream) comes from its type."""
    found = data.get("error")
    error: dict[str, Any] = found if isinstance(found, dict) else {}
    kind = str(error.get("type") or "")
    status = status or _STATUS_OF_TYPE.get(kind, 500)
    message = str(error.get("message") or f"HTTP {status}")
    return classify(endpoint, status, message, kind or None, rate_limit=rate)


@dataclass(slots=True)
class StreamState:
    """What a stream has said so far: usage pieces and which blocks are tool calls."""

    input_usage: dict[str, Any] = field(default_factory=dict)
    tools: dict[int, int] = field(default_factory=dict)  # content block index -> tool index
    answer: int | None = None  # content block index of the structured answer (OUTPUT_TOOL)
    fragments: dict[int, int] = field(default_factory=dict)  # tool index -> fragments seen
    finish: FinishReason = "stop"


def on_event(state: StreamState, kind: str, data: dict[str, Any]) -> Chunk | None:
    # One branch per event type, in stream order: the protocol's state machine reads best
    # in one place, so this stays one function.
    if kind == "message_start":
        state.input_usage = (data.get("message") or {}).get("usage") or {}
    elif kind == "content_block_start":
        block = data.get("content_block") or {}
        if block.get("type") == "tool_use" and block.get("name") == OUTPUT_TOOL:
            state.answer = int(data.get("index", 0))
        elif block.get("type") == "tool_use":
            index = state.tools[int(data.get("index", 0))] = len(state.tools)
            state.fragments[index] = 0
            return Chunk(tool_calls=(ToolCallDelta(index, block.get("id"), block.get("name")),))
    elif kind == "content_block_delta":
        delta = data.get("delta") or {}
        if delta.get("type") == "text_delta":
            return Chunk(content=str(delta.get("text", ""))) if delta.get("text") else None
        if state.answer is not None and int(data.get("index", 0)) == state.answer:
            piece = str(delta.get("partial_json") or "")
            return Chunk(content=piece) if piece else None
        if delta.get("type") == "input_json_delta" and delta.get("partial_json"):
            index = state.tools.get(int(data.get("index", 0)), 0)
            state.fragments[index] = state.fragments.get(index, 0) + 1
            return Chunk(tool_calls=(ToolCallDelta(index, arguments=delta["partial_json"]),))
    elif kind == "content_block_stop":
        stopped = state.tools.get(int(data.get("index", 0)))
        if stopped is not None and not state.fragments.get(stopped):
            return Chunk(tool_calls=(ToolCallDelta(stopped, arguments="{}"),))
    elif kind == "message_delta":
        reason = (data.get("delta") or {}).get("stop_reason")
        state.finish = _FINISH.get(str(reason), "stop")
        if state.answer is not None and state.finish == "tool_calls" and not state.tools:
            state.finish = "stop"
        merged = {
            **state.input_usage,
            **{k: v for k, v in (data.get("usage") or {}).items() if v is not None},
        }
        return Chunk(finish_reason=state.finish, usage=_usage(merged))
    return None

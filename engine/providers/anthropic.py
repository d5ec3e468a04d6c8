"""Anthropic Messages API (`POST /v1/messages`).

Translation: system/developer messages become the top-level `system`; `max_tokens` is
required (the caller's cap, else option `default_max_tokens`, default 4096); assistant tool
calls become `tool_use` blocks with parsed `input`; `tool` messages become `tool_result`
blocks in a user turn (consecutive results share one turn); `tool_choice` maps to
auto/any/tool/none, and `parallel_tool_calls: false` to `disable_parallel_tool_use`.

Streams are named SSE events: `message_start` carries input usage, `content_block_*`
carry text and `input_json_delta` fragments, `message_delta` the stop reason and the
cumulative output count, `message_stop` ends the stream; `ping` is ignored and
`event: error` inside a 200 stream raises like the HTTP error of the same type (529
`overloaded_error` is UnavailableError). Options: `anthropic_version` (default
`2023-06-01`), `anthropic_beta`, `auth: bearer` (send the key as `Authorization: Bearer`,
as anthropic SDK 2.x does, instead of `x-api-key`), `header:<Name>`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from engine.endpoints import Endpoint
from engine.errors import InvalidRequestError, ProviderError
from engine.messages import (
    Chunk,
    ContentPart,
    FilePart,
    FinishReason,
    ImagePart,
    Message,
    ProviderResponse,
    RateLimitInfo,
    RefusalPart,
    Request,
    TextPart,
    Tool,
    ToolCallDelta,
    ToolCallOut,
    Usage,
)

from .common import (
    add_tool_result,
    declaration,
    decode_object,
    json_headers,
    key_header,
    parse_arguments,
    response_schema,
    split_data_url,
    system_text,
)
from .exchange import HttpAdapter
from .failures import classify, error_from_body, protocol_error
from .sse import iter_sse
from .support import rules

__all__ = ["OUTPUT_TOOL", "THINKING_BUDGETS", "AnthropicAdapter"]

#: The tool a structured answer is forced through (`response_format`): its input is the
#: answer, returned as the message's text and never as a tool call.
OUTPUT_TOOL = "structured_output"
#: Extended-thinking budget (tokens) per OpenAI reasoning effort.
THINKING_BUDGETS = {
    "minimal": 1024,
    "low": 2048,
    "medium": 8192,
    "high": 16384,
    "xhigh": 32000,
    "max": 32000,
}

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


def _image(part: ImagePart) -> dict[str, Any]:
    url = part.image_url.url
    inline = split_data_url(url)
    if inline is None:
        return {"type": "image", "source": {"type": "url", "url": url}}
    media, data = inline
    return {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}


def _block(p: ContentPart) -> dict[str, Any] | None:
    """One content part as an Anthropic block (audio has none: dropped)."""
    if isinstance(p, TextPart):
        block: dict[str, Any] = {"type": "text", "text": p.text}
    elif isinstance(p, ImagePart):
        block = _image(p)
    elif isinstance(p, FilePart) and p.file.file_data:
        inline = split_data_url(p.file.file_data)
        media, data = inline or ("application/pdf", p.file.file_data)
        block = {
            "type": "document",
            "source": {"type": "base64", "media_type": media, "data": data},
        }
    else:
        return None
    if p.cache_control is not None:
        block["cache_control"] = p.cache_control
    return block


def _content(m: Message) -> str | list[dict[str, Any]]:
    if m.content is None or isinstance(m.content, str):
        return m.content or ""
    blocks = []
    for p in m.content:
        block = _block(p) if not isinstance(p, RefusalPart) else None
        if block is not None:
            blocks.append(block)
    return blocks


def _system(request: Request) -> str | list[dict[str, Any]] | None:
    """The system text, or text blocks when a part carries `cache_control`."""
    marked = any(
        isinstance(m.content, list) and any(getattr(p, "cache_control", None) for p in m.content)
        for m in request.messages
        if m.role in ("system", "developer")
    )
    if not marked:
        return system_text(request)
    blocks: list[dict[str, Any]] = []
    for m in request.messages:
        if m.role in ("system", "developer"):
            content = _content(m)
            blocks += [{"type": "text", "text": content}] if isinstance(content, str) else content
    return blocks


def _assistant(m: Message, endpoint: Endpoint) -> dict[str, Any]:
    content = _content(m)
    blocks: list[dict[str, Any]] = (
        [{"type": "text", "text": content}] if isinstance(content, str) else content
    )
    blocks = [b for b in blocks if b.get("type") != "text" or b.get("text")]
    for call in m.tool_calls or ():
        blocks.append(
            {
                "type": "tool_use",
                "id": call.id,
                "name": call.function.name,
                "input": parse_arguments(endpoint, call.id, call.function.arguments),
            }
        )
    return {"role": "assistant", "content": blocks}


def _messages(request: Request, endpoint: Endpoint) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in request.messages:
        if m.role in ("system", "developer"):
            continue
        if m.role == "tool":
            result = {
                "type": "tool_result",
                "tool_use_id": m.tool_call_id or "",
                "content": m.text(),
            }
            add_tool_result(out, "content", result, _is_tool_result)
        elif m.role == "assistant" and m.tool_calls:
            out.append(_assistant(m, endpoint))
        else:
            out.append({"role": m.role, "content": _content(m)})
    return out


def _is_tool_result(block: dict[str, Any]) -> bool:
    return block.get("type") == "tool_result"


def _tool_choice(request: Request) -> dict[str, Any] | None:
    choice = request.tool_choice
    if choice is None:
        spec: dict[str, Any] | None = None
    elif isinstance(choice, str):
        spec = {"type": {"auto": "auto", "required": "any", "none": "none"}[choice]}
    else:
        spec = {"type": "tool", "name": choice.function.get("name", "")}
    if request.parallel_tool_calls is False and request.tools:
        spec = spec or {"type": "auto"}
        if spec["type"] != "none":
            spec["disable_parallel_tool_use"] = True
    return spec


def _tool(tool: Tool) -> dict[str, Any]:
    out = declaration(tool, "input_schema")
    if tool.cache_control is not None:
        out["cache_control"] = tool.cache_control
    return out


def _structured(request: Request, body: dict[str, Any]) -> None:
    """`response_format` as a forced tool whose input is the answer (OUTPUT_TOOL)."""
    schema = response_schema(request)
    if schema is None:
        return
    tool = {"name": OUTPUT_TOOL, "description": "Answer with this object.", "input_schema": schema}
    body["tools"] = [*body.get("tools", ()), tool]
    if "tool_choice" not in body and "thinking" not in body:
        body["tool_choice"] = {"type": "tool", "name": OUTPUT_TOOL}


def _thinking(request: Request, endpoint: Endpoint, body: dict[str, Any]) -> None:
    """`reasoning_effort` as an extended-thinking budget (models declared reasoning)."""
    effort = request.reasoning_effort
    model = rules(endpoint.options)
    if effort is None or effort == "none" or not model.reasoning:
        return
    if model.efforts is not None and effort not in model.efforts:
        return
    budget = THINKING_BUDGETS[effort]
    body["max_tokens"] = max(body["max_tokens"], budget + 1024)
    body["thinking"] = {"type": "enabled", "budget_tokens": budget}
    body.pop("temperature", None)  # thinking takes only the default sampling
    body.pop("top_p", None)


def build_body(request: Request, endpoint: Endpoint, stream: bool) -> dict[str, Any]:
    """The Messages API body for this request."""
    limit = request.output_limit or int(endpoint.options.get("default_max_tokens", "4096"))
    body: dict[str, Any] = {"model": endpoint.upstream_model, "max_tokens": limit}
    system = _system(request)
    if system is not None:
        body["system"] = system
    body["messages"] = _messages(request, endpoint)
    if not body["messages"]:
        raise InvalidRequestError(
            f"{endpoint.provider}: Anthropic needs at least one non-system message",
            provider=endpoint.provider,
            model=endpoint.upstream_model,
        )
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.stop:
        body["stop_sequences"] = request.stop
    if request.tools:
        body["tools"] = [_tool(t) for t in request.tools]
    choice = _tool_choice(request)
    if choice is not None:
        body["tool_choice"] = choice
    if request.user:
        body["metadata"] = {"user_id": request.user}
    _thinking(request, endpoint, body)
    _structured(request, body)
    if stream:
        body["stream"] = True
    return body


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
class _StreamState:
    """What a stream has said so far: usage pieces and which blocks are tool calls."""

    input_usage: dict[str, Any] = field(default_factory=dict)
    tools: dict[int, int] = field(default_factory=dict)  # content block index -> tool index
    answer: int | None = None  # content block index of the structured answer (OUTPUT_TOOL)
    fragments: dict[int, int] = field(default_factory=dict)  # tool index -> fragments seen
    finish: FinishReason = "stop"


def _on_event(state: _StreamState, kind: str, data: dict[str, Any]) -> Chunk | None:
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


class AnthropicAdapter(HttpAdapter):
    """Messages API over HTTP: one request, normalised answer, translated errors."""

    protocol = "anthropic"

    def url(self, endpoint: Endpoint) -> str:
        base = endpoint.base_url.rstrip("/")
        return base + ("/messages" if base.endswith("/v1") else "/v1/messages")

    def headers(self, endpoint: Endpoint) -> dict[str, str]:
        headers = json_headers(endpoint, key_header(endpoint, "x-api-key"))
        # setdefault: a `header:anthropic-version` option still wins over the default.
        headers.setdefault(
            "anthropic-version", endpoint.options.get("anthropic_version", "2023-06-01")
        )
        if "anthropic_beta" in endpoint.options:
            headers["anthropic-beta"] = endpoint.options["anthropic_beta"]
        return headers

    async def complete(self, request: Request, endpoint: Endpoint) -> ProviderResponse:
        body = build_body(request, endpoint, False)
        data, rate = await self._post_json(
            endpoint, self.url(endpoint), self.headers(endpoint), body, error_from_object
        )
        if data.get("type") == "error":
            raise error_from_object(endpoint, 0, data, rate)
        return parse_message(endpoint, data, rate)

    async def stream(self, request: Request, endpoint: Endpoint) -> AsyncIterator[Chunk]:
        body = build_body(request, endpoint, True)
        url, headers = self.url(endpoint), self.headers(endpoint)
        async with self._open_stream(endpoint, url, headers, body, error_from_object) as answer:
            state = _StreamState()
            async for event in iter_sse(answer.lines()):
                if event.event == "error":
                    raise error_from_body(endpoint, 0, event.data, answer.rate, error_from_object)
                if event.event == "message_stop":
                    return
                data = decode_object(endpoint, event.data, f"{event.event} event")
                chunk = _on_event(state, str(data.get("type") or event.event), data)
                if chunk is not None:
                    yield answer.tag(chunk)
            raise protocol_error(endpoint, "stream ended before message_stop")

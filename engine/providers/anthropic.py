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
from typing import Any

from engine.endpoints import Endpoint
from engine.errors import InvalidRequestError
from engine.messages import (
    Chunk,
    ContentPart,
    FilePart,
    ImagePart,
    Message,
    ProviderResponse,
    RefusalPart,
    Request,
    TextPart,
    Tool,
)

from .anthropic_answers import OUTPUT_TOOL, StreamState, error_from_object, on_event, parse_message
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
from .failures import error_from_body, protocol_error
from .sse import iter_sse
from .support import rules

__all__ = [
    "OUTPUT_TOOL",
    "THINKING_BUDGETS",
    "AnthropicAdapter",
    "build_body",
    "error_from_object",
    "parse_message",
]

#: Extended-thinking budget (tokens) per OpenAI reasoning effort.
THINKING_BUDGETS = {
    "minimal": 1024,
    "low": 2048,
    "medium": 8192,
    "high": 16384,
    "xhigh": 32000,
    "max": 32000,
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
            state = StreamState()
            async for event in iter_sse(answer.lines()):
                if event.event == "error":
                    raise error_from_body(endpoint, 0, event.data, answer.rate, error_from_object)
                if event.event == "message_stop":
                    return
                data = decode_object(endpoint, event.data, f"{event.event} event")
                chunk = on_event(state, str(data.get("type") or event.event), data)
                if chunk is not None:
                    yield answer.tag(chunk)
            raise protocol_error(endpoint, "stream ended before message_stop")

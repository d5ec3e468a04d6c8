"""Ollama's native chat API (`POST /api/chat`).

Translation: messages keep their roles (system stays a message); sampling goes in
`options` with Modelfile names (`num_predict` for the output cap, `stop`, `seed`...);
tools use OpenAI's tool shape, but call arguments are objects and tool results name the
function (`tool_name`). `stream` is always sent explicitly, because Ollama streams by
default.

Streams are NDJSON: one object per line, the last with `done: true`, `done_reason` and the
token counts (`prompt_eval_count`, `eval_count`; absent counts mean 0). A line
`{"error": "..."}` inside a 200 stream raises; a stream that ends before `done: true` was
cut short. Errors are `{"error": "text"}`. Options: `keep_alive`, `num_ctx`, `header:<Name>`;
a key, when configured (ollama.com), is sent as a Bearer token.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from engine.embedding import EmbeddingRequest, ProviderEmbedding
from engine.endpoints import Endpoint
from engine.errors import InvalidRequestError, ProviderError
from engine.messages import (
    Chunk,
    FinishReason,
    ImagePart,
    Message,
    ProviderResponse,
    RateLimitInfo,
    Request,
    ToolCallOut,
    Usage,
)

from .common import (
    call_deltas,
    decode_object,
    json_headers,
    parse_arguments,
    sampling,
    tool_names_by_id,
)
from .embeddings import embed_ollama
from .exchange import HttpAdapter
from .failures import classify, protocol_error
from .sse import iter_ndjson
from .support import rules

__all__ = ["OllamaAdapter"]

#: Anthropic's `cache_control` on a tool (from /v1/messages) is not sent here.
_NOT_SENT = {"cache_control"}


def _images(m: Message, endpoint: Endpoint) -> list[str]:
    if not isinstance(m.content, list):
        return []
    images = []
    for p in m.content:
        if isinstance(p, ImagePart):
            url = p.image_url.url
            if not url.startswith("data:"):
                raise InvalidRequestError(
                    f"{endpoint.provider}: Ollama takes images as base64 data URLs, not links",
                    provider=endpoint.provider,
                    model=endpoint.upstream_model,
                )
            images.append(url.partition(",")[2])
    return images


def _message(m: Message, endpoint: Endpoint, names: dict[str, str]) -> dict[str, Any]:
    role = "system" if m.role == "developer" else m.role
    data: dict[str, Any] = {"role": role}
    text = m.text()
    if text or not m.tool_calls:
        data["content"] = text
    images = _images(m, endpoint)
    if images:
        data["images"] = images
    if m.tool_calls:
        data["tool_calls"] = [
            {
                "function": {
                    "name": c.function.name,
                    "arguments": parse_arguments(endpoint, c.id, c.function.arguments),
                }
            }
            for c in m.tool_calls
        ]
    if m.role == "tool":
        data["tool_name"] = names.get(m.tool_call_id or "", m.name or "")
    return data


#: Request fields and their Modelfile names.
_SAMPLING = {
    "temperature": "temperature",
    "top_p": "top_p",
    "output_limit": "num_predict",
    "stop": "stop",
    "seed": "seed",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
}


def _think(request: Request, endpoint: Endpoint) -> bool | None:
    """`reasoning_effort` as Ollama's `think` switch (models declared reasoning)."""
    effort = request.reasoning_effort
    if effort is None or not rules(endpoint.options).reasoning:
        return None
    return effort != "none"


def _options(request: Request, endpoint: Endpoint) -> dict[str, Any]:
    options = sampling(request, _SAMPLING)
    if "num_ctx" in endpoint.options:
        options["num_ctx"] = int(endpoint.options["num_ctx"])
    return options


def build_body(request: Request, endpoint: Endpoint, stream: bool) -> dict[str, Any]:
    """The /api/chat body for this request."""
    names = tool_names_by_id(request.messages)
    body: dict[str, Any] = {
        "model": endpoint.upstream_model,
        "messages": [_message(m, endpoint, names) for m in request.messages],
        "stream": stream,
    }
    if request.tools:
        body["tools"] = [t.model_dump(exclude_none=True, exclude=_NOT_SENT) for t in request.tools]
    options = _options(request, endpoint)
    if options:
        body["options"] = options
    fmt = request.response_format
    if fmt is not None and fmt.type != "text":
        schema = (fmt.json_schema or {}).get("schema") if fmt.type == "json_schema" else None
        body["format"] = schema or "json"
    think = _think(request, endpoint)
    if think is not None:
        body["think"] = think
    if "keep_alive" in endpoint.options:
        body["keep_alive"] = endpoint.options["keep_alive"]
    return body


def _calls(message: dict[str, Any], first_index: int) -> list[ToolCallOut]:
    out = []
    for i, call in enumerate(message.get("tool_calls") or ()):
        fn = call.get("function") or {}
        name = str(fn.get("name", ""))
        call_id = str(call.get("id") or f"call_{first_index + i}_{name}")
        args = fn.get("arguments")
        text = args if isinstance(args, str) else orjson.dumps(args or {}).decode()
        out.append(ToolCallOut(call_id, name, text))
    return out


def _usage(data: dict[str, Any]) -> Usage:
    return Usage(
        input_tokens=int(data.get("prompt_eval_count") or 0),
        output_tokens=int(data.get("eval_count") or 0),
    )


def _finish(data: dict[str, Any], has_calls: bool) -> FinishReason:
    if has_calls:
        return "tool_calls"
    return "length" if data.get("done_reason") == "length" else "stop"


def error_from_object(
    endpoint: Endpoint, status: int, data: dict[str, Any], rate: RateLimitInfo | None
) -> ProviderError:
    """`{"error": "text"}` as a ProviderError."""
    return classify(endpoint, status, str(data.get("error") or f"HTTP {status}"), rate_limit=rate)


def parse_chat(
    endpoint: Endpoint, data: dict[str, Any], rate: RateLimitInfo | None
) -> ProviderResponse:
    """A final (`done: true`) /api/chat answer as a ProviderResponse."""
    message = data.get("message") or {}
    calls = _calls(message, 0)
    text = str(message.get("content") or "")
    return ProviderResponse(
        content=text if text or not calls else None,
        tool_calls=tuple(calls),
        finish_reason=_finish(data, bool(calls)),
        usage=_usage(data),
        upstream_model=str(data.get("model") or endpoint.upstream_model),
        rate_limit=rate,
    )


class OllamaAdapter(HttpAdapter):
    """Ollama /api/chat over HTTP: one request, normalised answer, translated errors."""

    protocol = "ollama"

    def url(self, endpoint: Endpoint) -> str:
        return endpoint.base_url.rstrip("/").removesuffix("/api") + "/api/chat"

    def headers(self, endpoint: Endpoint) -> dict[str, str]:
        return json_headers(endpoint)

    async def embed(self, request: EmbeddingRequest, endpoint: Endpoint) -> ProviderEmbedding:
        """One /api/embed call (engine.providers.embeddings)."""
        url, headers = self.url(endpoint), self.headers(endpoint)
        return await embed_ollama(self, url, headers, error_from_object, request, endpoint)

    async def complete(self, request: Request, endpoint: Endpoint) -> ProviderResponse:
        body = build_body(request, endpoint, False)
        data, rate = await self._post_json(
            endpoint, self.url(endpoint), self.headers(endpoint), body, error_from_object
        )
        if "error" in data:
            raise classify(endpoint, 0, str(data["error"]), rate_limit=rate)
        return parse_chat(endpoint, data, rate)

    async def stream(self, request: Request, endpoint: Endpoint) -> AsyncIterator[Chunk]:
        body = build_body(request, endpoint, True)
        url, headers = self.url(endpoint), self.headers(endpoint)
        async with self._open_stream(endpoint, url, headers, body, error_from_object) as answer:
            calls_seen = 0
            async for line in iter_ndjson(answer.lines()):
                data = decode_object(endpoint, line, "stream line")
                if "error" in data:
                    raise classify(endpoint, 0, str(data["error"]), rate_limit=answer.rate)
                message = data.get("message") or {}
                deltas = call_deltas(_calls(message, calls_seen), calls_seen)
                calls_seen += len(deltas)
                done = bool(data.get("done"))
                content = str(message.get("content") or "")
                if content or deltas or done:
                    yield answer.tag(
                        Chunk(
                            content=content,
                            tool_calls=deltas,
                            finish_reason=_finish(data, calls_seen > 0) if done else None,
                            usage=_usage(data) if done else None,
                        )
                    )
                if done:
                    return
            raise protocol_error(endpoint, "stream ended before done: true")

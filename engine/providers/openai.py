"""OpenAI Chat Completions, and every OpenAI-compatible provider by base URL.

Groq, DeepSeek, Mistral, Together, the Hugging Face router/TGI, OpenRouter, vLLM and
llama.cpp servers all speak this protocol with small dialect differences, selected by
endpoint options rather than subclasses:

- `max_tokens_field`: `max_tokens` or `max_completion_tokens` (default: the field the
  caller used; reasoning models need `max_completion_tokens`, older servers `max_tokens`).
- `stream_usage`: send `stream_options.include_usage` when streaming (default true: the
  ledger needs token counts; turn off for servers that reject the field).
- `dialect`: `mistral` (`tool_choice: "any"`, `random_seed`), `groq` (no `messages[].name`).
- `header:<Name>`: extra request headers (OpenRouter `HTTP-Referer`, `OpenAI-Project`...).

Errors inside a 200 stream (`data: {"error": ...}`, OpenRouter and vLLM do this) raise like
HTTP errors; `:` keep-alive comments and Azure's `choices: []` filter chunks are skipped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from operator import itemgetter
from typing import Any, NamedTuple

from engine.embedding import EmbeddingRequest, ProviderEmbedding
from engine.endpoints import Endpoint
from engine.errors import ProviderError
from engine.frozen import builder
from engine.messages import (
    Blob,
    Choice,
    Chunk,
    FinishReason,
    ProviderResponse,
    RateLimitInfo,
    Request,
    ToolCallDelta,
    ToolCallOut,
    ToolChoice,
    Usage,
)

from .common import decode_object, json_headers, option_bool, per_endpoint
from .embeddings import embed_openai
from .exchange import HttpAdapter
from .failures import classify, protocol_error
from .sse import iter_sse
from .support import OPENAI_ONLY, SAMPLING, rules

__all__ = ["OpenAIAdapter", "error_from_object", "finish_reason"]

#: Anthropic's `cache_control` on a tool (from /v1/messages) is not sent here.
_NOT_SENT = {"cache_control"}

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "model_length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
    "error": "error",
}


# One of each per answer: built without a frozen dataclass's per-field cost (engine.frozen).
_provider_response = builder(ProviderResponse)
_usage_of = builder(Usage)


def finish_reason(value: Any) -> FinishReason:
    """OpenAI's (and its imitators') finish reason in the engine's vocabulary."""
    return _FINISH.get(value, "stop") if isinstance(value, str) else "stop"


#: What a message may carry that no OpenAI-protocol server is sent: response-only
#: `annotations`, and Anthropic's `cache_control` (from /v1/messages).
_NEVER_SENT = {"annotations": True, "cache_control": True}
_NEVER_SENT_IN_PARTS = {"content": {"__all__": {"cache_control"}}}
#: OpenAI-platform message fields other OpenAI-compatible servers are not sent.
_PLATFORM_ONLY = {"audio": True, "refusal": True, "annotations": True}


def _message(m: Any, dialect: str) -> dict[str, Any]:
    if (
        isinstance(m.content, str)
        and m.name is None
        and m.tool_calls is None
        and m.tool_call_id is None
        and m.audio is None
    ):
        # The common plain-text message, without a pydantic dump (same dict, fewer us).
        return {"role": m.role, "content": m.content}
    exclude: dict[str, Any] = dict(_NEVER_SENT if dialect == "openai" else _PLATFORM_ONLY)
    if isinstance(m.content, list):
        exclude.update(_NEVER_SENT_IN_PARTS)
    data: dict[str, Any] = m.model_dump(exclude_none=True, exclude=exclude)
    if m.role == "assistant" and "content" not in data:
        data["content"] = None
    if dialect == "groq":
        data.pop("name", None)
    return data


class _Options(NamedTuple):
    """The endpoint options a body depends on, looked up once per endpoint."""

    dialect: str
    token_field: str | None  # `max_tokens_field`, when it names a field we know
    stream_usage: bool
    sent: frozenset[str]  # the pass-through fields this endpoint's model is sent
    efforts: frozenset[str] | None  # the reasoning efforts it takes (None: any)


def _options(endpoint: Endpoint, _: object) -> _Options:
    options = endpoint.options
    model = rules(options)
    dialect = options.get("dialect", "openai")
    sent = set(_PASSTHROUGH) - (set() if dialect == "openai" else set(OPENAI_ONLY))
    if not model.sampling:
        sent -= set(SAMPLING)
    if not model.reasoning:
        sent -= {"reasoning_effort", "verbosity"}
    return _Options(
        dialect,
        model.token_field,
        option_bool(options, "stream_usage", True),
        frozenset(sent),
        model.efforts,
    )


class _Prepared(NamedTuple):
    """What an adapter sends every call to one endpoint, computed once (`per_endpoint`)."""

    url: str
    headers: Mapping[str, str]
    options: _Options


def _token_field(request: Request, chosen: str | None) -> str:
    if chosen is not None:
        return chosen
    return "max_completion_tokens" if request.max_completion_tokens else "max_tokens"


#: Request fields sent as they are, when set and the endpoint's model takes them
#: (`_Options.sent`); `n` too: the answer's further choices come back as `choices`.
_PASSTHROUGH = (
    "n",
    "temperature",
    "top_p",
    "stop",
    "parallel_tool_calls",
    "presence_penalty",
    "frequency_penalty",
    "user",
    "logprobs",
    "top_logprobs",
    "reasoning_effort",
    *OPENAI_ONLY,
)


_passthrough_values = itemgetter(*_PASSTHROUGH)
_PASSTHROUGH_SET = frozenset(_PASSTHROUGH)

#: The package whose adapters' URLs and headers depend on the endpoint alone.
_OWN = "engine.providers."


def _tool_choice(choice: ToolChoice, dialect: str) -> Any:
    if dialect == "mistral" and choice == "required":
        return "any"  # Mistral's name for "must call a tool"
    return choice if isinstance(choice, str) else choice.model_dump()


def build_body(request: Request, endpoint: Endpoint, stream: bool) -> dict[str, Any]:
    """The chat/completions JSON body for this request (routing inputs left out)."""
    return _body(request, endpoint, per_endpoint(endpoint, _Options, _options), stream)


def _body(request: Request, endpoint: Endpoint, options: _Options, stream: bool) -> dict[str, Any]:
    dialect = options.dialect
    messages = []
    for m in request.messages:  # a loop: for a few messages, cheaper than a comprehension
        messages.append(_message(m, dialect))
    body: dict[str, Any] = {"model": endpoint.upstream_model, "messages": messages}
    # The common request sets none of the pass-through fields: one set test on the fields
    # the caller gave (a field not given holds None) instead of reading all 30 (~4k
    # instructions a call); else their values in one C call from the model's __dict__.
    if not _PASSTHROUGH_SET.isdisjoint(request.model_fields_set):
        values = _passthrough_values(request.__dict__)
        sent = options.sent
        for name, value in zip(_PASSTHROUGH, values, strict=True):
            if value is not None and name in sent:
                body[name] = value
        effort = body.get("reasoning_effort")
        if effort is not None and options.efforts is not None and effort not in options.efforts:
            del body["reasoning_effort"]
    limit = request.max_completion_tokens or request.max_tokens  # request.output_limit
    if limit is not None:
        body[_token_field(request, options.token_field)] = limit
    if request.seed is not None:
        body["random_seed" if dialect == "mistral" else "seed"] = request.seed
    if request.tools:
        body["tools"] = [t.model_dump(exclude_none=True, exclude=_NOT_SENT) for t in request.tools]
    if request.tool_choice is not None:
        body["tool_choice"] = _tool_choice(request.tool_choice, dialect)
    if request.response_format is not None:
        body["response_format"] = request.response_format.model_dump(exclude_none=True)
    if stream:
        body["stream"] = True
        if options.stream_usage:
            body["stream_options"] = {"include_usage": True}
    return body


def _usage(data: Any) -> Usage | None:
    if not isinstance(data, dict):
        return None
    details = data.get("prompt_tokens_details")
    out_details = data.get("completion_tokens_details")
    return _usage_of(
        int(data.get("prompt_tokens") or 0),
        int(data.get("completion_tokens") or 0),
        # DeepSeek reports cache hits at the top level instead of in the details.
        _count(details, "cached_tokens") or _count(data, "prompt_cache_hit_tokens"),
        0,  # OpenAI bills no cache writes
        _count(out_details, "reasoning_tokens"),
    )


def _count(details: Any, name: str) -> int:
    """A count inside a `*_tokens_details` object (absent, null or not an object: 0)."""
    if not isinstance(details, dict):
        return 0
    return int(details.get(name) or 0)


def parse_completion(
    endpoint: Endpoint, data: dict[str, Any], rate: RateLimitInfo | None
) -> ProviderResponse:
    """A chat.completion object as a ProviderResponse (choices after the first, of a
    request with `n` > 1, as its `choices`; each choice's logprobs as sent)."""
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise protocol_error(endpoint, "response has no choices")
    content, calls, finish, logprobs = _choice(choices[0])
    return _provider_response(
        content,
        calls,
        finish,
        _usage(data.get("usage")) or Usage(),
        str(data.get("model") or endpoint.upstream_model),
        str(data.get("id") or ""),
        rate,
        logprobs,
        tuple(
            Choice(int(c.get("index") or i), *_choice(c))
            for i, c in enumerate(choices[1:], 1)
            if isinstance(c, dict)
        )
        if len(choices) > 1
        else (),
    )


def _choice(
    choice: dict[str, Any],
) -> tuple[str | None, tuple[ToolCallOut, ...], FinishReason, Blob | None]:
    """One choice's content, tool calls, finish reason and logprobs."""
    message = choice.get("message") or {}
    raw_calls = message.get("tool_calls")
    calls = (
        tuple(
            ToolCallOut(
                str(c.get("id") or f"call_{i}"),
                str((c.get("function") or {}).get("name") or ""),
                str((c.get("function") or {}).get("arguments") or ""),
            )
            for i, c in enumerate(raw_calls)
        )
        if raw_calls
        else ()
    )
    finish = finish_reason(choice.get("finish_reason"))
    content = message.get("content")
    if content is None and message.get("refusal"):
        content, finish = message["refusal"], "content_filter"
    raw = choice.get("logprobs")
    logprobs = Blob(raw) if isinstance(raw, dict) else None
    return content, calls, "tool_calls" if calls and finish == "stop" else finish, logprobs


def parse_chunk(data: dict[str, Any]) -> Chunk | None:
    """A chat.completion.chunk as a Chunk; None for chunks that carry nothing."""
    usage = _usage(data.get("usage"))
    choices = data.get("choices") or ()
    if not choices:
        return Chunk(usage=usage) if usage else None
    choice = choices[0]
    delta = choice.get("delta") or {}
    calls = tuple(
        ToolCallDelta(
            index=int(c.get("index") or 0),
            id=c.get("id"),
            name=(c.get("function") or {}).get("name"),
            arguments=(c.get("function") or {}).get("arguments") or "",
        )
        for c in delta.get("tool_calls") or ()
    )
    raw_finish = choice.get("finish_reason")
    finish = finish_reason(raw_finish) if raw_finish else None
    content = delta.get("content") or delta.get("refusal") or ""
    raw = choice.get("logprobs")
    logprobs = Blob(raw) if isinstance(raw, dict) else None
    if not content and not calls and finish is None and usage is None and logprobs is None:
        return None
    index = int(choice.get("index") or 0)
    return Chunk(content, calls, finish, usage, None, logprobs, index)


def error_from_object(
    endpoint: Endpoint, status: int, data: dict[str, Any], rate: RateLimitInfo | None
) -> ProviderError:
    """Classify `{"error": {...}}`, Mistral's `{"detail": ...}` or `{"message": ...}`."""
    error = data.get("error", data)
    if isinstance(error, str):
        return classify(endpoint, status, error, rate_limit=rate)
    if not isinstance(error, dict):
        return classify(endpoint, status, f"HTTP {status}", rate_limit=rate)
    message = str(error.get("message") or error.get("detail") or f"HTTP {status}")
    inner = error.get("innererror") or error.get("inner_error") or {}
    code = error.get("code") or (inner.get("code") if isinstance(inner, dict) else None)
    code = code or error.get("type")
    if not status and str(code).isdigit():
        status = int(str(code))  # OpenRouter: a numeric code is the HTTP status it stands for
    return classify(endpoint, status, message, str(code) if code else None, rate_limit=rate)


class OpenAIAdapter(HttpAdapter):
    """Chat Completions over HTTP: one request, normalised answer, translated errors."""

    protocol = "openai"

    #: Whether `url` and `headers` are this package's own (OpenAI's, Azure's), which depend
    #: on the endpoint alone, so `complete` computes them once per endpoint. A subclass
    #: defined elsewhere may compute them per call (a refreshed token, say): it is asked
    #: every call, as before.
    _parts_per_endpoint = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._parts_per_endpoint = all(
            getattr(cls, name).__module__.startswith(_OWN) for name in ("url", "headers")
        )

    def url(self, endpoint: Endpoint) -> str:
        return endpoint.base_url.rstrip("/") + "/chat/completions"

    def headers(self, endpoint: Endpoint) -> dict[str, str]:
        return json_headers(endpoint)

    def _prepared(self, endpoint: Endpoint) -> _Prepared:
        """This adapter's URL, headers and options for the endpoint (see
        `_parts_per_endpoint`)."""
        if self._parts_per_endpoint:
            return per_endpoint(endpoint, type(self), self._prepare)
        return self._prepare(endpoint, None)

    def _prepare(self, endpoint: Endpoint, _: object) -> _Prepared:
        options = per_endpoint(endpoint, _Options, _options)
        return _Prepared(self.url(endpoint), self.headers(endpoint), options)

    async def complete(self, request: Request, endpoint: Endpoint) -> ProviderResponse:
        # URL, headers and options, usually from the per-endpoint cache: the transport only
        # reads the headers, so the same mapping serves every call.
        url, headers, options = self._prepared(endpoint)
        body = _body(request, endpoint, options, False)
        data, rate = await self._post_json(endpoint, url, headers, body, error_from_object)
        if "error" in data and "choices" not in data:
            raise error_from_object(endpoint, 0, data, rate)
        return parse_completion(endpoint, data, rate)

    async def embed(self, request: EmbeddingRequest, endpoint: Endpoint) -> ProviderEmbedding:
        """One /embeddings call (engine.providers.embeddings)."""
        url, headers = self.url(endpoint), self.headers(endpoint)
        return await embed_openai(self, url, headers, error_from_object, request, endpoint)

    async def stream(self, request: Request, endpoint: Endpoint) -> AsyncIterator[Chunk]:
        body = build_body(request, endpoint, True)
        url, headers = self.url(endpoint), self.headers(endpoint)
        async with self._open_stream(endpoint, url, headers, body, error_from_object) as answer:
            async for event in iter_sse(answer.lines()):
                if event.data == "[DONE]":
                    return
                data = decode_object(endpoint, event.data, "stream chunk")
                if "error" in data:
                    raise error_from_object(endpoint, 0, data, answer.rate)
                chunk = parse_chunk(data)
                if chunk is not None:
                    yield answer.tag(chunk)
            raise protocol_error(endpoint, "stream ended before [DONE]")

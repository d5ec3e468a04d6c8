"""Google Gemini API: `models/{model}:generateContent` and `:streamGenerateContent?alt=sse`.

Translation: system/developer messages become `systemInstruction`; turns become `contents`
with roles `user`/`model` and `parts`; sampling goes in `generationConfig` (camelCase);
tools become `functionDeclarations` (with `parametersJsonSchema`, plain JSON Schema);
assistant tool calls become `functionCall` parts (arguments as an object) and `tool`
messages `functionResponse` parts named after the call they answer (consecutive results
share one turn). Gemini's function calls carry no id unless the model gives one, so ids are
made up as `call_<n>_<name>`, stable within one answer; a call's `thoughtSignature`
travels inside its id and is sent back with the call (thinking models reject calls
without it). Calls that came from another provider have none; option
`foreign_call_signature` sets the value sent for them (Google documents a bypass value,
`skip_thought_signature_validator`, for transferred conversations; not verified here).

Streams are data-only SSE with no terminator: every event is a whole response holding the
new parts and the cumulative `usageMetadata`; the last carries `finishReason`, so a stream
that ends without one was cut short. Errors are Google RPC shaped; an invalid key is a 400
with reason `API_KEY_INVALID` (AuthenticationError) and a 429 carries `RetryInfo.retryDelay`.
Options: `api_version` (default `v1beta`), `foreign_call_signature`, `header:<Name>`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any
from urllib.parse import quote

import orjson

from engine.embedding import EmbeddingRequest, ProviderEmbedding
from engine.endpoints import Endpoint
from engine.errors import ContentFilteredError, ProviderError
from engine.messages import (
    AudioPart,
    Chunk,
    ContentPart,
    FilePart,
    FinishReason,
    ImagePart,
    Message,
    ProviderResponse,
    RateLimitInfo,
    Request,
    TextPart,
    ToolCallOut,
    Usage,
)

from .common import (
    add_tool_result,
    call_deltas,
    declaration,
    decode_object,
    json_headers,
    parse_arguments,
    sampling,
    split_data_url,
    system_text,
    tool_names_by_id,
)
from .embeddings import embed_gemini
from .exchange import HttpAdapter
from .failures import classify, protocol_error
from .ratelimits import retry_delay_from_google_details
from .sse import iter_sse
from .support import rules

__all__ = ["GeminiAdapter"]

# Gemini's thinking models attach a `thoughtSignature` to function-call parts and require it
# back with the call in the next turn. The normalised tool call has nowhere else to carry
# it, so it rides in the call id (which every client echoes back verbatim) after this mark.
_SIGNATURE_MARK = "~sig~"

_FINISH: dict[str, FinishReason] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "MALFORMED_FUNCTION_CALL": "error",
}


def _part(p: ContentPart) -> dict[str, Any] | None:
    """One content part as a Gemini part (a refusal or a file by id has none)."""
    if isinstance(p, TextPart):
        return {"text": p.text}
    if isinstance(p, AudioPart):
        media = "audio/mpeg" if p.input_audio.format == "mp3" else "audio/wav"
        return {"inlineData": {"mimeType": media, "data": p.input_audio.data}}
    if isinstance(p, FilePart):
        given = p.file.file_data
        if not given:
            return None
        media, data = split_data_url(given) or ("application/pdf", given)
        return {"inlineData": {"mimeType": media, "data": data}}
    if not isinstance(p, ImagePart):
        return None
    url = p.image_url.url
    inline = split_data_url(url)
    if inline is None:
        return {"fileData": {"fileUri": url}}
    media, data = inline
    return {"inlineData": {"mimeType": media, "data": data}}


def _parts(m: Message) -> list[dict[str, Any]]:
    if m.content is None:
        return []
    if isinstance(m.content, str):
        return [{"text": m.content}] if m.content else []
    return [part for p in m.content if (part := _part(p)) is not None]


def _response_object(text: str) -> dict[str, Any]:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {"result": text}
    return value if isinstance(value, dict) else {"result": value}


def _contents(request: Request, endpoint: Endpoint) -> list[dict[str, Any]]:
    names = tool_names_by_id(request.messages)
    out: list[dict[str, Any]] = []
    for m in request.messages:
        if m.role in ("system", "developer"):
            continue
        if m.role == "tool":
            name = names.get(m.tool_call_id or "", m.name or "")
            part = {"functionResponse": {"name": name, "response": _response_object(m.text())}}
            add_tool_result(out, "parts", part, _is_function_response)
            continue
        parts = _parts(m)
        for call in m.tool_calls or ():
            args = parse_arguments(endpoint, call.id, call.function.arguments)
            call_part: dict[str, Any] = {"functionCall": {"name": call.function.name, "args": args}}
            _, sep, signature = call.id.partition(_SIGNATURE_MARK)
            signature = signature if sep else endpoint.options.get("foreign_call_signature", "")
            if signature:
                call_part["thoughtSignature"] = signature
            parts.append(call_part)
        out.append({"role": "model" if m.role == "assistant" else "user", "parts": parts})
    return out


def _is_function_response(part: dict[str, Any]) -> bool:
    return "functionResponse" in part


#: Request fields and their generationConfig names.
_SAMPLING = {
    "temperature": "temperature",
    "top_p": "topP",
    "output_limit": "maxOutputTokens",
    "stop": "stopSequences",
    "seed": "seed",
    "presence_penalty": "presencePenalty",
    "frequency_penalty": "frequencyPenalty",
}


#: thinkingBudget (tokens) per OpenAI reasoning effort; 0 turns thinking off.
THINKING_BUDGETS = {
    "none": 0,
    "minimal": 512,
    "low": 1024,
    "medium": 8192,
    "high": 24576,
    "xhigh": 32768,
    "max": 32768,
}


def _generation_config(request: Request, endpoint: Endpoint) -> dict[str, Any]:
    config = sampling(request, _SAMPLING)
    effort = request.reasoning_effort
    if effort is not None:
        model = rules(endpoint.options)
        if model.reasoning and (model.efforts is None or effort in model.efforts):
            config["thinkingConfig"] = {"thinkingBudget": THINKING_BUDGETS[effort]}
    fmt = request.response_format
    if fmt is not None and fmt.type != "text":
        config["responseMimeType"] = "application/json"
        if fmt.type == "json_schema" and fmt.json_schema:
            config["responseJsonSchema"] = fmt.json_schema.get("schema", fmt.json_schema)
    return config


def _tool_config(request: Request) -> dict[str, Any] | None:
    choice = request.tool_choice
    if choice is None:
        return None
    if isinstance(choice, str):
        mode = {"auto": "AUTO", "required": "ANY", "none": "NONE"}[choice]
        return {"functionCallingConfig": {"mode": mode}}
    name = choice.function.get("name", "")
    return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}}


def build_body(request: Request, endpoint: Endpoint) -> dict[str, Any]:
    """The generateContent body for this request (the model is in the URL)."""
    body: dict[str, Any] = {"contents": _contents(request, endpoint)}
    system = system_text(request)
    if system is not None:
        body["systemInstruction"] = {"parts": [{"text": system}]}
    config = _generation_config(request, endpoint)
    if config:
        body["generationConfig"] = config
    if request.tools:
        declarations = [declaration(t, "parametersJsonSchema") for t in request.tools]
        body["tools"] = [{"functionDeclarations": declarations}]
    tool_config = _tool_config(request)
    if tool_config is not None:
        body["toolConfig"] = tool_config
    return body


def _usage(data: Any) -> Usage | None:
    if not isinstance(data, dict):
        return None
    return Usage(
        input_tokens=int(data.get("promptTokenCount") or 0),
        output_tokens=int(data.get("candidatesTokenCount") or 0)
        + int(data.get("thoughtsTokenCount") or 0),
        cache_read_tokens=int(data.get("cachedContentTokenCount") or 0),
        reasoning_tokens=int(data.get("thoughtsTokenCount") or 0),
    )


def _candidate(endpoint: Endpoint, data: dict[str, Any]) -> dict[str, Any] | None:
    """The first candidate; a blocked prompt (no candidates) is ContentFilteredError."""
    candidates = data.get("candidates")
    if candidates:
        first = candidates[0]
        return first if isinstance(first, dict) else None
    reason = (data.get("promptFeedback") or {}).get("blockReason")
    if reason:
        raise classify(
            endpoint,
            400,
            f"prompt blocked ({reason})",
            str(reason),
            error_class=ContentFilteredError,
        )
    return None


def _split_parts(parts: list[Any], first_index: int) -> tuple[str, list[ToolCallOut]]:
    text: list[str] = []
    calls: list[ToolCallOut] = []
    for part in parts:
        if not isinstance(part, dict) or part.get("thought"):
            continue
        if "text" in part:
            text.append(str(part["text"]))
        call = part.get("functionCall")
        if isinstance(call, dict):
            name = str(call.get("name", ""))
            call_id = str(call.get("id") or f"call_{first_index + len(calls)}_{name}")
            if part.get("thoughtSignature"):
                call_id += _SIGNATURE_MARK + str(part["thoughtSignature"])
            calls.append(ToolCallOut(call_id, name, orjson.dumps(call.get("args") or {}).decode()))
    return "".join(text), calls


def _finish(raw: Any, has_calls: bool) -> FinishReason:
    finish = _FINISH.get(str(raw), "stop")
    return "tool_calls" if has_calls and finish == "stop" else finish


def parse_response(
    endpoint: Endpoint, data: dict[str, Any], rate: RateLimitInfo | None
) -> ProviderResponse:
    """A GenerateContentResponse as a ProviderResponse."""
    candidate = _candidate(endpoint, data)
    if candidate is None:
        raise protocol_error(endpoint, "response has no candidates")
    text, calls = _split_parts((candidate.get("content") or {}).get("parts") or [], 0)
    return ProviderResponse(
        content=text if text or not calls else None,
        tool_calls=tuple(calls),
        finish_reason=_finish(candidate.get("finishReason"), bool(calls)),
        usage=_usage(data.get("usageMetadata")) or Usage(),
        upstream_model=str(data.get("modelVersion") or endpoint.upstream_model),
        response_id=str(data.get("responseId") or ""),
        rate_limit=rate,
    )


def error_from_object(
    endpoint: Endpoint, status: int, data: dict[str, Any], rate: RateLimitInfo | None
) -> ProviderError:
    """Classify a Google RPC error object; RetryInfo becomes retry_after."""
    found = data.get("error")
    error: dict[str, Any] = found if isinstance(found, dict) else {}
    details = error.get("details")
    reasons = [d.get("reason") for d in details or () if isinstance(d, dict) and d.get("reason")]
    code = str(reasons[0] if reasons else error.get("status") or "") or None
    retry = retry_delay_from_google_details(details)
    if retry is not None:
        rate = replace(rate, retry_after_s=retry) if rate else RateLimitInfo(retry_after_s=retry)
    status = status or int(error.get("code") or 500)
    message = str(error.get("message") or f"HTTP {status}")
    return classify(endpoint, status, message, code, retry_after=retry, rate_limit=rate)


class GeminiAdapter(HttpAdapter):
    """Gemini generateContent over HTTP: one request, normalised answer, translated errors."""

    protocol = "gemini"

    def url(self, endpoint: Endpoint, stream: bool) -> str:
        base = endpoint.base_url.rstrip("/")
        version = endpoint.options.get("api_version", "v1beta")
        if not base.endswith(("/v1beta", "/v1", "/v1alpha")):
            base = f"{base}/{version}"
        model = quote(endpoint.upstream_model.removeprefix("models/"), safe="-._")
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return f"{base}/models/{model}:{method}"

    def headers(self, endpoint: Endpoint) -> dict[str, str]:
        return json_headers(endpoint, ("x-goog-api-key", ""))

    async def embed(self, request: EmbeddingRequest, endpoint: Endpoint) -> ProviderEmbedding:
        """One batchEmbedContents call (engine.providers.embeddings)."""
        url, headers = self.url(endpoint, False), self.headers(endpoint)
        return await embed_gemini(self, url, headers, error_from_object, request, endpoint)

    async def complete(self, request: Request, endpoint: Endpoint) -> ProviderResponse:
        body = build_body(request, endpoint)
        data, rate = await self._post_json(
            endpoint, self.url(endpoint, False), self.headers(endpoint), body, error_from_object
        )
        if "error" in data:
            raise error_from_object(endpoint, 0, data, rate)
        return parse_response(endpoint, data, rate)

    async def stream(self, request: Request, endpoint: Endpoint) -> AsyncIterator[Chunk]:
        body = build_body(request, endpoint)
        url, headers = self.url(endpoint, True), self.headers(endpoint)
        async with self._open_stream(endpoint, url, headers, body, error_from_object) as answer:
            state = _StreamState()
            async for event in iter_sse(answer.lines()):
                data = decode_object(endpoint, event.data, "stream chunk")
                if "error" in data:
                    raise error_from_object(endpoint, 0, data, answer.rate)
                chunk = state.on_response(endpoint, data)
                if chunk is not None:
                    yield answer.tag(chunk)
            if not state.finished:
                raise protocol_error(endpoint, "stream ended without a finishReason")


class _StreamState:
    """What a stream has said so far: calls numbered, whether it finished, the last usage.

    Every event is a whole response with only the new parts (and cumulative usage), so each
    becomes one chunk; the usage is reported once, with the finish reason.
    """

    __slots__ = ("calls_seen", "finished", "usage")

    def __init__(self) -> None:
        self.calls_seen = 0
        self.finished = False
        self.usage: Usage | None = None

    def on_response(self, endpoint: Endpoint, data: dict[str, Any]) -> Chunk | None:
        candidate = _candidate(endpoint, data) or {}
        parts = (candidate.get("content") or {}).get("parts") or []
        text, calls = _split_parts(parts, self.calls_seen)
        deltas = call_deltas(calls, self.calls_seen)
        self.calls_seen += len(calls)
        raw_finish = candidate.get("finishReason")
        self.finished = self.finished or raw_finish is not None
        self.usage = _usage(data.get("usageMetadata")) or self.usage  # cumulative: keep the last
        if not (text or deltas or raw_finish):
            return None
        return Chunk(
            content=text,
            tool_calls=deltas,
            finish_reason=_finish(raw_finish, self.calls_seen > 0) if raw_finish else None,
            usage=self.usage if raw_finish else None,
        )

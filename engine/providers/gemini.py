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

from engine.endpoints import Endpoint
from engine.errors import ContentFilteredError, ProviderError
from engine.messages import (
    Chunk,
    FinishReason,
    ImagePart,
    Message,
    ProviderResponse,
    RateLimitInfo,
    Request,
    TextPart,
    ToolCallDelta,
    ToolCallOut,
    Usage,
)

from .common import (
    decode_object,
    dumps,
    extra_headers,
    parse_arguments,
    system_text,
    tool_names_by_id,
)
from .failures import classify, protocol_error
from .http import HttpClient, shared_client
from .ratelimits import parse_rate_limit, retry_delay_from_google_details
from .sse import iter_sse

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


def _part(p: TextPart | ImagePart) -> dict[str, Any]:
    if isinstance(p, TextPart):
        return {"text": p.text}
    url = p.image_url.url
    if url.startswith("data:"):
        head, _, data = url.partition(",")
        return {"inlineData": {"mimeType": head[5:].split(";")[0] or "image/png", "data": data}}
    return {"fileData": {"fileUri": url}}


def _parts(m: Message) -> list[dict[str, Any]]:
    if m.content is None:
        return []
    if isinstance(m.content, str):
        return [{"text": m.content}] if m.content else []
    return [_part(p) for p in m.content]


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
            last = out[-1] if out else None
            if (
                last
                and last["role"] == "user"
                and all("functionResponse" in p for p in last["parts"])
            ):
                last["parts"].append(part)
            else:
                out.append({"role": "user", "parts": [part]})
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


def _generation_config(request: Request) -> dict[str, Any]:
    config: dict[str, Any] = {}
    pairs = (
        ("temperature", request.temperature),
        ("topP", request.top_p),
        ("maxOutputTokens", request.output_limit),
        ("stopSequences", request.stop),
        ("seed", request.seed),
        ("presencePenalty", request.presence_penalty),
        ("frequencyPenalty", request.frequency_penalty),
    )
    config.update({k: v for k, v in pairs if v is not None})
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
    config = _generation_config(request)
    if config:
        body["generationConfig"] = config
    if request.tools:
        declarations = [
            {
                "name": t.function.name,
                **({"description": t.function.description} if t.function.description else {}),
                "parametersJsonSchema": t.function.parameters,
            }
            for t in request.tools
        ]
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
        cached_input_tokens=int(data.get("cachedContentTokenCount") or 0),
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


def error_from_body(
    endpoint: Endpoint, status: int, body: bytes, rate: RateLimitInfo | None
) -> ProviderError:
    """A Google RPC error (`{"error": {code, message, status, details}}`) as a ProviderError."""
    try:
        data = decode_object(endpoint, body, "error body")
    except ProviderError:
        text = body[:300].decode("utf-8", "replace").strip()
        return classify(endpoint, status, f"HTTP {status}: {text}", rate_limit=rate)
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


class GeminiAdapter:
    """Gemini generateContent over HTTP: one request, normalised answer, translated errors."""

    protocol = "gemini"

    def __init__(self, http: HttpClient | None = None) -> None:
        self._http = http or shared_client()

    def url(self, endpoint: Endpoint, stream: bool) -> str:
        base = endpoint.base_url.rstrip("/")
        version = endpoint.options.get("api_version", "v1beta")
        if not base.endswith(("/v1beta", "/v1", "/v1alpha")):
            base = f"{base}/{version}"
        model = quote(endpoint.upstream_model.removeprefix("models/"), safe="-._")
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return f"{base}/models/{model}:{method}"

    def headers(self, endpoint: Endpoint) -> dict[str, str]:
        headers = {"Content-Type": "application/json", **extra_headers(endpoint)}
        if endpoint.api_key:
            headers["x-goog-api-key"] = endpoint.api_key.reveal()
        return headers

    async def complete(self, request: Request, endpoint: Endpoint) -> ProviderResponse:
        payload = dumps(build_body(request, endpoint))
        url = self.url(endpoint, False)
        reply = await self._http.post(endpoint, url, self.headers(endpoint), payload)
        rate = parse_rate_limit(reply.headers)
        if reply.status >= 300:
            raise error_from_body(endpoint, reply.status, reply.body, rate)
        data = decode_object(endpoint, reply.body, "response body")
        if "error" in data:
            raise error_from_body(endpoint, 0, reply.body, rate)
        return parse_response(endpoint, data, rate)

    async def stream(self, request: Request, endpoint: Endpoint) -> AsyncIterator[Chunk]:
        payload = dumps(build_body(request, endpoint))
        url = self.url(endpoint, True)
        reply = await self._http.open_stream(endpoint, url, self.headers(endpoint), payload)
        try:
            rate = parse_rate_limit(reply.headers)
            if reply.status >= 300:
                raise error_from_body(endpoint, reply.status, await reply.read(), rate)
            calls_seen = 0
            finished = False
            usage: Usage | None = None
            async for event in iter_sse(reply.lines()):
                raw = event.data.encode()
                data = decode_object(endpoint, raw, "stream chunk")
                if "error" in data:
                    raise error_from_body(endpoint, 0, raw, rate)
                candidate = _candidate(endpoint, data) or {}
                text, calls = _split_parts(
                    (candidate.get("content") or {}).get("parts") or [], calls_seen
                )
                deltas = tuple(
                    ToolCallDelta(calls_seen + i, c.id, c.name, c.arguments)
                    for i, c in enumerate(calls)
                )
                calls_seen += len(calls)
                raw_finish = candidate.get("finishReason")
                finished = finished or raw_finish is not None
                usage = _usage(data.get("usageMetadata")) or usage  # cumulative: keep the last
                chunk = Chunk(
                    content=text,
                    tool_calls=deltas,
                    finish_reason=_finish(raw_finish, calls_seen > 0) if raw_finish else None,
                    usage=usage if raw_finish else None,
                )
                if not (text or deltas or raw_finish):
                    continue
                if rate is not None:
                    chunk, rate = replace(chunk, rate_limit=rate), None
                yield chunk
            if not finished:
                raise protocol_error(endpoint, "stream ended without a finishReason")
        finally:
            reply.close()

    async def warm(self, endpoint: Endpoint) -> None:
        await self._http.warm(endpoint, int(endpoint.options.get("warm_connections", "1")))

    async def aclose(self) -> None:
        await self._http.aclose()

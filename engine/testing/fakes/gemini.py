"""Fake Gemini API (`/v1beta/models/{model}:generateContent` and `:streamGenerateContent`).

Requires `x-goog-api-key` (or `?key=`); a wrong key is a 400 `INVALID_ARGUMENT` with
reason `API_KEY_INVALID`, as the live service answers. Responses are
GenerateContentResponse objects (`candidates[].content.parts`, UPPER_CASE `finishReason`
that stays `STOP` for function calls, `usageMetadata`, `modelVersion`, `responseId`);
`alt=sse` streams data-only events, each a whole response with the new parts and cumulative
usage, the last with `finishReason`, and no terminator (without `alt=sse` the real stream
endpoint returns a JSON array, which this fake declines with a 400). Errors are Google RPC
shaped; a 429 carries `RetryInfo.retryDelay` in the body instead of a Retry-After header.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from engine.providers.mock import JSON_OBJECT, ScriptedAnswer, ScriptedTool

from ._server import Ask, BadRequest, FakeUpstream, Fault, json_response, split_text, sse

__all__ = ["SKIP_SIGNATURE", "FakeGemini"]

_STATUS = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP"}


def _field(data: dict[str, Any], camel: str) -> Any:
    """A field by its JSON name or its proto name: the API's proto-JSON accepts both."""
    if camel in data:
        return data[camel]
    return data.get("".join("_" + c.lower() if c.isupper() else c for c in camel))


def _text(parts: Any) -> str:
    if not isinstance(parts, list):
        return ""
    return "".join(str(p.get("text", "")) for p in parts if isinstance(p, dict))


def _function_result(content: Any) -> str | None:
    parts = content.get("parts") if isinstance(content, dict) else None
    found = [
        _field(p, "functionResponse")
        for p in parts or ()
        if isinstance(p, dict) and _field(p, "functionResponse")
    ]
    return json.dumps(found[-1].get("response")) if found else None


SKIP_SIGNATURE = "skip_thought_signature_validator"


def _signature(name: str) -> str:
    return base64.b64encode(f"fake-thought-signature:{name}".encode()).decode()


def _check_signatures(contents: Any) -> None:
    """Reject an earlier function call sent back without its thought signature."""
    for content in contents if isinstance(contents, list) else ():
        if not isinstance(content, dict) or content.get("role") != "model":
            continue
        for part in content.get("parts") or ():
            call = _field(part, "functionCall") if isinstance(part, dict) else None
            signature = _field(part, "thoughtSignature")
            valid = (_signature(str(call.get("name"))), SKIP_SIGNATURE) if call else ()
            if call and signature not in valid:
                raise BadRequest(
                    "Function call is missing a thought_signature in functionCall parts. "
                    "This is required for tools to work correctly."
                )


def _schema(config: dict[str, Any]) -> dict[str, Any] | None:
    """`responseJsonSchema` / `responseSchema` (JSON mode alone: JSON_OBJECT)."""
    for camel in ("responseJsonSchema", "responseSchema"):
        schema = _field(config, camel)
        if isinstance(schema, dict):
            return schema
    return JSON_OBJECT if _field(config, "responseMimeType") == "application/json" else None


def _tools(body: dict[str, Any]) -> list[ScriptedTool]:
    return [
        ScriptedTool(d["name"], _field(d, "parametersJsonSchema") or d.get("parameters") or {})
        for t in body.get("tools") or ()
        for d in _field(t, "functionDeclarations") or ()
    ]


def _tool_choice(body: dict[str, Any]) -> str | None:
    """`toolConfig.functionCallingConfig` as the scripted model's tool_choice."""
    calling = _field(_field(body, "toolConfig") or {}, "functionCallingConfig") or {}
    mode = calling.get("mode")
    allowed = _field(calling, "allowedFunctionNames")
    if mode == "ANY" and allowed:
        first: str = allowed[0]
        return first
    return {"AUTO": "auto", "NONE": "none", "ANY": "required"}.get(mode or "")


class FakeGemini(FakeUpstream):
    """Gemini generateContent; `url` is the origin, as the SDK's base_url."""

    name = "gemini"
    call_id_prefix = "fc_"

    def __init__(
        self, *, api_key: str | None = None, seed: int = 0, thought_signatures: bool = False
    ) -> None:
        super().__init__(api_key=api_key, seed=seed)
        # thought_signatures=True behaves like Gemini's thinking models: function calls are
        # signed and earlier calls must come back with their signature (or the documented
        # bypass value for calls that came from elsewhere).
        self.thought_signatures = thought_signatures

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/{version}/models/{target}", self._route)

    async def _route(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["target"].endswith(":batchEmbedContents"):
            return await self.handle_embed(request)
        return await self.handle(request)

    def parse_embed(self, request: web.Request, body: Any) -> tuple[str, list[str], int | None]:
        requests = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(requests, list) or not requests:
            raise BadRequest("* BatchEmbedContentsRequest.requests: requests is not specified")
        texts = [_text((r.get("content") or {}).get("parts")) for r in requests]
        size = requests[0].get("outputDimensionality")
        return request.match_info["target"].partition(":")[0], texts, size

    def render_embed(self, model: str, vectors: list[list[float]], tokens: int) -> dict[str, Any]:
        return {"embeddings": [{"values": v} for v in vectors]}

    def auth_error(self, request: web.Request) -> web.Response | None:
        key = request.headers.get("x-goog-api-key") or request.query.get("key")
        if key is None or (self.api_key is not None and key != self.api_key):
            body = {
                "error": {
                    "code": 400,
                    "message": "API key not valid. Please pass a valid API key.",
                    "status": "INVALID_ARGUMENT",
                    "details": [
                        {
                            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                            "reason": "API_KEY_INVALID",
                            "domain": "googleapis.com",
                            "metadata": {"service": "generativelanguage.googleapis.com"},
                        }
                    ],
                }
            }
            return json_response(400, body, {})
        return None

    def _error(self, fault: Fault, status: int) -> web.Response:
        # Gemini gives no Retry-After header: the delay goes in the body's RetryInfo.
        message = fault.message or self.error_message(status)
        details: list[dict[str, Any]] = []
        if fault.retry_after is not None:
            details.append(
                {
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": f"{fault.retry_after:g}s",
                }
            )
        return json_response(
            status, self._error_body(status, message, fault.code, details), dict(fault.headers)
        )

    def _error_body(
        self, status: int, message: str, code: str | None, details: list[dict[str, Any]]
    ) -> dict[str, Any]:
        error: dict[str, Any] = {
            "code": status,
            "message": message,
            "status": code or _STATUS.get(status, "UNKNOWN"),
        }
        if details:
            error["details"] = details
        return {"error": error}

    def error_response(
        self, status: int, message: str, code: str | None, headers: Mapping[str, str]
    ) -> web.Response:
        return json_response(status, self._error_body(status, message, code, []), headers)

    def stream_error_frame(self, message: str, code: str | None) -> bytes:
        return sse(self._error_body(500, message, code, []))

    def parse(self, request: web.Request, body: Any) -> Ask:
        model, _, method = request.match_info["target"].partition(":")
        if method not in ("generateContent", "streamGenerateContent"):
            raise BadRequest(f"Unknown method {method!r}")
        if method == "streamGenerateContent" and request.query.get("alt") != "sse":
            raise BadRequest("this fake streams only as server-sent events (alt=sse)")
        if not isinstance(body, dict) or not body.get("contents"):
            raise BadRequest("* GenerateContentRequest.contents: contents is not specified")
        contents = body["contents"]
        if self.thought_signatures:
            _check_signatures(contents)
        config = _field(body, "generationConfig") or {}
        users = [
            c for c in contents if c.get("role", "user") == "user" and _function_result(c) is None
        ]
        system = (_field(body, "systemInstruction") or {}).get("parts")
        return Ask(
            model=model,
            stream=method == "streamGenerateContent",
            prompt_texts=[_text(system)] + [_text(c.get("parts")) for c in contents],
            last_user=_text(users[-1].get("parts")) if users else "",
            tool_result=_function_result(contents[-1]),
            tools=_tools(body),
            tool_choice=_tool_choice(body),
            max_tokens=_field(config, "maxOutputTokens"),
            schema=_schema(config),
        )

    def _usage(self, answer: ScriptedAnswer, output: int) -> dict[str, Any]:
        # Gemini: promptTokenCount includes cached content; thoughts are counted apart.
        extra = self.extra_usage
        prompt = answer.input_tokens + extra.cache_read + extra.cache_write
        thoughts = extra.reasoning if output else 0
        usage: dict[str, Any] = {
            "promptTokenCount": prompt,
            "candidatesTokenCount": output,
            "totalTokenCount": prompt + output + thoughts,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
        }
        if extra.cache_read:
            usage["cachedContentTokenCount"] = extra.cache_read
        if thoughts:
            usage["thoughtsTokenCount"] = thoughts
        return usage

    def _response(
        self, ask: Ask, parts: list[dict[str, Any]], finish: str | None, usage: dict[str, Any]
    ) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
        if finish:
            candidate["finishReason"] = finish
        return {
            "candidates": [candidate],
            "usageMetadata": usage,
            "modelVersion": ask.model,
            "responseId": f"fake{self._count:06d}",
        }

    def _parts(self, answer: ScriptedAnswer) -> list[dict[str, Any]]:
        parts: list[dict[str, Any]] = [{"text": answer.text}] if answer.text else []
        parts += [
            {"functionCall": {"name": c.name, "args": json.loads(c.arguments)}}
            | ({"thoughtSignature": _signature(c.name)} if self.thought_signatures else {})
            for c in answer.calls
        ]
        return parts

    def _blocked(self, ask: Ask, answer: ScriptedAnswer) -> dict[str, Any]:
        """A refused prompt: no candidates at all, only promptFeedback.blockReason."""
        return {
            "promptFeedback": {"blockReason": "SAFETY"},
            "usageMetadata": self._usage(answer, 0),
            "modelVersion": ask.model,
            "responseId": f"fake{self._count:06d}",
        }

    def render(self, ask: Ask, answer: ScriptedAnswer) -> dict[str, Any]:
        if answer.finish == "content_filter":
            return self._blocked(ask, answer)
        usage = self._usage(answer, answer.output_tokens)
        return self._response(ask, self._parts(answer), _FINISH[answer.finish], usage)

    def frames(self, ask: Ask, answer: ScriptedAnswer) -> tuple[list[bytes], list[bytes]]:
        if answer.finish == "content_filter":
            return [sse(self._blocked(ask, answer))], []
        pieces = split_text(answer.text) or [""]
        out = []
        emitted = 0
        for i, piece in enumerate(pieces):
            emitted = min(
                answer.output_tokens, emitted + max(1, answer.output_tokens // len(pieces))
            )
            last = i == len(pieces) - 1 and not answer.calls
            usage = self._usage(answer, answer.output_tokens if last else emitted)
            parts = [{"text": piece}] if piece else []
            finish = _FINISH[answer.finish] if last else None
            if parts or finish:
                out.append(self._response(ask, parts, finish, usage))
        if answer.calls:
            calls = [p for p in self._parts(answer) if "functionCall" in p]
            usage = self._usage(answer, answer.output_tokens)
            out.append(self._response(ask, calls, "STOP", usage))
        return [sse(o) for o in out], []

    def malformed_frame(self) -> bytes:
        return b'data: {"candidates": [ {"content": oops\n\n'

    def success_headers(self) -> dict[str, str]:
        return {"x-gemini-service-tier": "standard", "server-timing": "gfet4t7; dur=12"}

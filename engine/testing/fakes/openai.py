"""Fake OpenAI Chat Completions upstream (the Azure one, a subclass, is in azure.py).

Bodies follow the official OpenAPI document (`CreateChatCompletionResponse`, the
`chat.completion.chunk` stream with `stream_options.include_usage` and `data: [DONE]`,
`{"error": {message, type, param, code}}`), headers follow what the services send
(`x-request-id`, `x-ratelimit-*` with Go-style reset durations, `retry-after`). Asked for
`n` choices it answers n (each the scripted answer, each billed); asked for `logprobs` it
sends each choice's token logprobs in OpenAI's shape (choices.py).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from engine.providers.mock import JSON_OBJECT, ScriptedAnswer, ScriptedTool

from ._server import Ask, BadRequest, FakeUpstream, json_response, split_text, sse, text_of
from .choices import logprobs

__all__ = ["FakeOpenAI", "scripted_tools"]

_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    429: "requests",
    500: "server_error",
    503: "server_error",
}
_CODES = {401: "invalid_api_key", 404: "model_not_found", 429: "rate_limit_exceeded"}


def _fallback_type(status: int) -> str:
    return "server_error" if status >= 500 else "invalid_request_error"


def scripted_tools(tools: Any) -> list[ScriptedTool]:
    """OpenAI-shaped `tools` (Ollama uses the same shape) as the scripted model's tools."""
    return [
        ScriptedTool(t["function"]["name"], t["function"].get("parameters") or {})
        for t in tools or ()
    ]


#: The families whose sampling is fixed and whose token cap is `max_completion_tokens`
#: (the real API answers 400 to `max_tokens` and to a temperature other than 1).
_REASONING = re.compile(r"^(gpt-5(?!-chat)|o\d)")


def _reasoning_rules(model: str, body: dict[str, Any]) -> None:
    if not _REASONING.match(model.rpartition("/")[2]):
        return
    if body.get("max_tokens") is not None:
        raise BadRequest(
            "Unsupported parameter: 'max_tokens' is not supported with this model. "
            "Use 'max_completion_tokens' instead."
        )
    for name in ("temperature", "top_p"):
        value = body.get(name)
        if value is not None and value != 1:
            raise BadRequest(
                f"Unsupported value: '{name}' does not support {value} with this model. "
                "Only the default (1) value is supported."
            )


def _schema(body: dict[str, Any]) -> dict[str, Any] | None:
    fmt = body.get("response_format")
    if not isinstance(fmt, dict) or fmt.get("type") not in ("json_object", "json_schema"):
        return None
    schema = (fmt.get("json_schema") or {}).get("schema")
    return schema if isinstance(schema, dict) else JSON_OBJECT


def parse_chat(body: Any, model_override: str | None = None) -> Ask:
    """A chat/completions body in neutral terms; BadRequest like the real API's 400s."""
    if not isinstance(body, dict):
        raise BadRequest("We could not parse the JSON body of your request.")
    model = model_override or body.get("model")
    messages = body.get("messages")
    if not model:
        raise BadRequest("you must provide a model parameter")
    _reasoning_rules(str(model), body)
    if not isinstance(messages, list) or not messages:
        raise BadRequest("[] is too short - 'messages'")
    last = messages[-1]
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        choice = (choice.get("function") or {}).get("name")
    options = body.get("stream_options") or {}
    top = body.get("top_logprobs")
    if top is not None and not body.get("logprobs"):
        raise BadRequest("logprobs must be set to true if top_logprobs is used")
    return Ask(
        model=str(model),
        stream=bool(body.get("stream")),
        prompt_texts=[text_of(m.get("content")) for m in messages if isinstance(m, dict)],
        last_user=text_of(users[-1].get("content")) if users else "",
        tool_result=text_of(last.get("content")) if last.get("role") == "tool" else None,
        tools=scripted_tools(body.get("tools")),
        tool_choice=choice,
        max_tokens=body.get("max_completion_tokens") or body.get("max_tokens"),
        include_usage=bool(options.get("include_usage")),
        schema=_schema(body),
        n=int(body.get("n") or 1),
        logprobs=int(top or 0) if body.get("logprobs") else None,
    )


class FakeOpenAI(FakeUpstream):
    """`POST {url}/chat/completions` with Bearer auth; `url` ends in `/v1`."""

    name = "openai"
    base_path = "/v1"

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self.handle)
        app.router.add_post("/v1/embeddings", self.handle_embed)

    def parse_embed(self, request: web.Request, body: Any) -> tuple[str, list[str], int | None]:
        if not isinstance(body, dict) or "input" not in body:
            raise BadRequest("'input' is a required property")
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        model = request.match_info.get("deployment") or str(body.get("model") or "")
        return model, [str(t) for t in texts], body.get("dimensions")

    def render_embed(self, model: str, vectors: list[list[float]], tokens: int) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)
            ],
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    # --- auth and errors ---------------------------------------------------------------

    def presented_key(self, request: web.Request) -> str | None:
        auth = request.headers.get("Authorization", "")
        return auth[7:] if auth.startswith("Bearer ") else None

    def auth_error(self, request: web.Request) -> web.Response | None:
        key = self.presented_key(request)
        if key is None:
            return self.error_response(401, "You didn't provide an API key.", None, {})
        if self.api_key is not None and key != self.api_key:
            # The real service echoes (part of) the wrong key: the adapter must redact it.
            return self.error_response(401, f"Incorrect API key provided: {key}.", None, {})
        return None

    def error_body(self, status: int, message: str, code: str | None) -> dict[str, Any]:
        return {
            "error": {
                "message": message,
                "type": _TYPES.get(status, _fallback_type(status)),
                "param": None,
                "code": code or _CODES.get(status),
            }
        }

    def error_response(
        self, status: int, message: str, code: str | None, headers: Mapping[str, str]
    ) -> web.Response:
        headers = {**headers, "x-request-id": f"req_{self._count:08d}"}
        body = self.error_body(status, message, code)
        self.sent.append(("error", body))
        return json_response(status, body, headers)

    def stream_error_frame(self, message: str, code: str | None) -> bytes:
        body = self.error_body(500, message, code)
        self.sent.append(("error", body))
        return sse(body)

    def success_headers(self) -> dict[str, str]:
        used = self._count
        return {
            "x-request-id": f"req_{used:08d}",
            "openai-processing-ms": "12",
            "x-ratelimit-limit-requests": "10000",
            "x-ratelimit-remaining-requests": str(max(0, 10000 - used)),
            "x-ratelimit-reset-requests": "6m0s",
            "x-ratelimit-limit-tokens": "2000000",
            "x-ratelimit-remaining-tokens": str(max(0, 2000000 - 50 * used)),
            "x-ratelimit-reset-tokens": "12ms",
        }

    # --- answers ------------------------------------------------------------------------

    def parse(self, request: web.Request, body: Any) -> Ask:
        return parse_chat(body)

    def _id(self) -> str:
        return f"chatcmpl-fake{self._count:06d}"

    def _usage(self, answer: ScriptedAnswer, n: int = 1) -> dict[str, Any]:
        # OpenAI: prompt_tokens includes cached tokens, completion_tokens reasoning tokens
        # (and every one of the n choices).
        extra = self.extra_usage
        prompt = answer.input_tokens + extra.cache_read + extra.cache_write
        completion = (answer.output_tokens + extra.reasoning) * n
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": extra.cache_read, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": extra.reasoning,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def render(self, ask: Ask, answer: ScriptedAnswer) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": answer.text if not answer.calls else None,
            "refusal": None,
            "annotations": [],
        }
        if answer.calls:
            message["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for c in answer.calls
            ]
        lp = logprobs(answer.text if not answer.calls else "", ask.logprobs)
        choices = [
            {"index": i, "message": message, "logprobs": lp, "finish_reason": answer.finish}
            for i in range(ask.n)
        ]
        return self._sent(
            "response",
            self._decorate(
                {
                    "id": self._id(),
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": ask.model,
                    "choices": choices,
                    "usage": self._usage(answer, ask.n),
                    "service_tier": "default",
                    "system_fingerprint": "fp_fake",
                }
            ),
        )

    def _sent(self, kind: str, data: dict[str, Any]) -> dict[str, Any]:
        self.sent.append((kind, data))
        return data

    def _decorate(self, data: dict[str, Any]) -> dict[str, Any]:
        """Hook for Azure's content-filter annotations."""
        return data

    def _chunk(
        self, ask: Ask, delta: dict[str, Any], finish: str | None, index: int = 0
    ) -> dict[str, Any]:
        lp = logprobs(delta["content"], ask.logprobs) if delta.get("content") else None
        chunk: dict[str, Any] = {
            "id": self._id(),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": ask.model,
            "system_fingerprint": "fp_fake",
            "choices": [{"index": index, "delta": delta, "logprobs": lp, "finish_reason": finish}],
        }
        if ask.include_usage:
            chunk["usage"] = None
        return chunk

    def frames(self, ask: Ask, answer: ScriptedAnswer) -> tuple[list[bytes], list[bytes]]:
        chunks = [c for i in range(ask.n) for c in self._choice_chunks(ask, answer, i)]
        if ask.include_usage:
            usage_chunk = self._chunk(ask, {}, None)
            usage_chunk["choices"] = []
            usage_chunk["usage"] = self._usage(answer, ask.n)
            chunks.append(usage_chunk)
        chunks = self._lead_chunks(ask) + chunks
        return [sse(self._sent("chunk", c)) for c in chunks], [b"data: [DONE]\n\n"]

    def _choice_chunks(self, ask: Ask, answer: ScriptedAnswer, i: int) -> list[dict[str, Any]]:
        """One choice's chunks: the role, the text in pieces, tool calls, the finish."""
        chunks = [self._chunk(ask, {"role": "assistant", "content": "", "refusal": None}, None, i)]
        chunks += [
            self._chunk(ask, {"content": piece}, None, i) for piece in split_text(answer.text)
        ]
        for index, call in enumerate(answer.calls):
            head = {
                "index": index,
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            chunks.append(self._chunk(ask, {"tool_calls": [head]}, None, i))
            for piece in split_text(call.arguments, 7):
                part = {"index": index, "function": {"arguments": piece}}
                chunks.append(self._chunk(ask, {"tool_calls": [part]}, None, i))
        chunks.append(self._chunk(ask, {}, answer.finish, i))
        return chunks

    def _lead_chunks(self, ask: Ask) -> list[dict[str, Any]]:
        return []

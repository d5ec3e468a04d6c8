"""POST /v1/completions: OpenAI's legacy text completion, answered through the chat call.

The `prompt` (one string, or a list holding one) is the user message; `max_tokens`
(default 16, as OpenAI's), sampling, `stop`, `seed`, `user` and `logit_bias` keep their
names; `logprobs: N` asks for `logprobs` with `top_logprobs: N`; `echo` puts the prompt in
front of the text, and the answer's token logprobs come back in the legacy shape
(`tokens`, `token_logprobs`, `top_logprobs` as token -> logprob maps, `text_offset`).
`best_of` and `suffix` have no chat equivalent and are ignored; `n` is passed on like in
chat (n choices, or named dropped). Streams are `text_completion` chunks ending in `[DONE]`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

import orjson

from engine.messages import Request
from engine.result import Response, StreamEvent
from engine.server.errors import HTTPError, ServerError
from engine.server.sse import DONE, error_event

__all__ = ["COMPLETIONS_PATH", "Completions"]

COMPLETIONS_PATH = "/v1/completions"

_SAME = (
    *("model", "max_tokens", "temperature", "top_p", "stop", "seed", "user", "n", "stream"),
    *("presence_penalty", "frequency_penalty", "logit_bias", "stream_options"),
)
_KNOWN = frozenset({*_SAME, "prompt", "logprobs", "echo", "best_of", "suffix"})


def _bad(message: str) -> ServerError:
    return ServerError(400, message, "invalid_request_error", "invalid_request")


def _prompt(data: dict[str, Any]) -> str:
    prompt = data.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise _bad("prompt: one non-empty string is required (token arrays and batches are not)")
    return prompt


def _choice(
    text: str, finish: str | None, logprobs: Mapping[str, Any] | None = None, index: int = 0
) -> dict[str, Any]:
    legacy = None if logprobs is None else _legacy_logprobs(logprobs)
    return {"text": text, "index": index, "logprobs": legacy, "finish_reason": finish}


def _legacy_logprobs(logprobs: Mapping[str, Any]) -> dict[str, Any]:
    """Chat's per-token logprobs in the legacy Completions shape."""
    tokens = [t for t in logprobs.get("content") or () if isinstance(t, dict)]
    offsets, at = [], 0
    for t in tokens:
        offsets.append(at)
        at += len(str(t.get("token", "")))
    return {
        "tokens": [t.get("token") for t in tokens],
        "token_logprobs": [t.get("logprob") for t in tokens],
        "top_logprobs": [
            {a.get("token"): a.get("logprob") for a in t.get("top_logprobs") or ()} for t in tokens
        ],
        "text_offset": offsets,
    }


def _finish(reason: str | None) -> str | None:
    return None if reason is None else ("length" if reason == "length" else "stop")


class Completions:
    """The legacy Completions surface (see the module docstring)."""

    path = COMPLETIONS_PATH

    def to_chat(self, data: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(data) - _KNOWN)
        if unknown:
            raise _bad(f"Unrecognized request argument supplied: {unknown[0]}")
        chat: dict[str, Any] = {"messages": [{"role": "user", "content": _prompt(data)}]}
        chat["max_tokens"] = 16
        for name in _SAME:
            if data.get(name) is not None:
                chat[name] = data[name]
        logprobs = data.get("logprobs")
        if isinstance(logprobs, int) and not isinstance(logprobs, bool):
            chat["logprobs"] = True
            chat["top_logprobs"] = logprobs
        return chat

    def answer(self, resp: Response, data: dict[str, Any]) -> dict[str, Any]:
        text = resp.content or ""
        if data.get("echo"):
            text = _prompt(data) + text
        more = [
            _choice(c.content or "", _finish(c.finish_reason), c.logprobs, c.index)
            for c in resp.choices
        ]
        return {
            "id": "cmpl-" + (resp.id or uuid.uuid4().hex).removeprefix("chatcmpl-"),
            "object": "text_completion",
            "created": resp.created,
            "model": resp.model,
            "choices": [_choice(text, _finish(resp.finish_reason), resp.logprobs), *more],
            "usage": {
                "prompt_tokens": resp.usage.input_tokens,
                "completion_tokens": resp.usage.output_tokens,
                "total_tokens": resp.usage.total_tokens,
            },
        }

    def encoder(self, data: dict[str, Any], req: Request) -> CompletionChunks:
        options = data.get("stream_options")
        usage = isinstance(options, dict) and bool(options.get("include_usage"))
        return CompletionChunks(_prompt(data) if data.get("echo") else "", usage)

    def error_body(self, error: HTTPError) -> dict[str, Any]:
        return error.body()


class CompletionChunks:
    """Engine stream events as `text_completion` chunks."""

    def __init__(self, echo: str, include_usage: bool) -> None:
        self.echo = echo
        self.include_usage = include_usage
        self.id = "cmpl-" + uuid.uuid4().hex
        self.created = int(time.time())

    def encode(self, event: StreamEvent) -> bytes:
        c = event.chunk
        text = c.content
        if c.index == 0:
            text, self.echo = self.echo + c.content, ""
        finish = _finish(c.finish_reason)
        base = {
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": event.model,
        }
        out = b""
        if text or finish is not None:
            choice = _choice(text, finish, c.logprobs, c.index)
            out = b"data: " + orjson.dumps({**base, "choices": [choice]}) + b"\n\n"
        if c.usage is not None and self.include_usage:
            usage = {
                "prompt_tokens": c.usage.input_tokens,
                "completion_tokens": c.usage.output_tokens,
                "total_tokens": c.usage.total_tokens,
            }
            out += b"data: " + orjson.dumps({**base, "choices": [], "usage": usage}) + b"\n\n"
        return out

    def finish(self) -> bytes:
        return DONE

    def error(self, error: HTTPError) -> bytes:
        return error_event(error)

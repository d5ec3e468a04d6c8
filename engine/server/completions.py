"""POST /v1/completions: OpenAI's legacy text completion, answered through the chat call.

The `prompt` (one string, or a list holding one) is the user message; `max_tokens`
(default 16, as OpenAI's), sampling, `stop`, `seed`, `user` and `logit_bias` keep their
names; `logprobs: N` asks for `logprobs` with `top_logprobs: N`; `echo` puts the prompt in
front of the text. `best_of` and `suffix` have no chat equivalent and are ignored; `n` is
reported dropped like in chat. Streams are `text_completion` chunks ending in `[DONE]`.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

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


def _choice(text: str, finish: str | None) -> dict[str, Any]:
    return {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}


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
        finish = "length" if resp.finish_reason == "length" else "stop"
        return {
            "id": "cmpl-" + (resp.id or uuid.uuid4().hex).removeprefix("chatcmpl-"),
            "object": "text_completion",
            "created": resp.created,
            "model": resp.model,
            "choices": [_choice(text, finish)],
            "usage": {
                "prompt_tokens": resp.usage.input_tokens,
                "completion_tokens": resp.usage.output_tokens,
                "total_tokens": resp.usage.total_tokens,
            },
        }

    def encoder(self, data: dict[str, Any]) -> CompletionChunks:
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
        text, self.echo = self.echo + c.content, ""
        finish = (
            None
            if c.finish_reason is None
            else ("length" if c.finish_reason == "length" else "stop")
        )
        base = {
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": event.model,
        }
        out = b""
        if text or finish is not None:
            out = b"data: " + orjson.dumps({**base, "choices": [_choice(text, finish)]}) + b"\n\n"
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

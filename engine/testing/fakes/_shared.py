"""What the fakes share besides the server: the neutral request (`Ask`), faults, recorded
requests, and the helpers that write bodies and stream frames."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import orjson
from aiohttp import web

from engine.providers.mock import ScriptedAnswer, ScriptedTool, script_answer

REFUSAL = "I can't help with that request."


@dataclass(frozen=True, slots=True)
class Fault:
    """What to do wrong (or slowly) for one request. All delays are in seconds."""

    status: int | None = None  # answer with the protocol's error body for this status
    message: str | None = None  # error message override
    code: str | None = None  # protocol error type/code override (e.g. "context_length_exceeded")
    retry_after: float | None = None  # Retry-After header (and retry-after-ms when fractional)
    latency: float | tuple[float, float] = 0.0  # before the response headers; (lo, hi) = random
    first_token_delay: float = 0.0  # after headers, before the first body bytes
    trickle: float = 0.0  # between streamed frames (and pieces, with trickle_bytes)
    trickle_bytes: int | None = None  # send streamed frames in pieces this small (splits
    #                                   lines and multi-byte characters across reads)
    reset: bool = False  # drop the connection before answering
    stall: bool = False  # send headers, then never send the body
    truncate_after: int | None = None  # end the stream cleanly after N frames, no terminator
    reset_after: int | None = None  # drop the connection after N streamed frames
    stream_error_after: int | None = None  # send the protocol's in-stream error after N frames
    malformed: bool = False  # invalid JSON body (or one invalid JSON frame when streaming)
    refuse: bool = False  # the model refuses on content grounds (each protocol's own way)
    headers: Mapping[str, str] = field(default_factory=dict)  # extra response headers
    echo_key: bool = False  # append the presented API key to the error message, as OpenAI's
    #                         "Incorrect API key provided: sk-..." does (adapters must redact)

    @classmethod
    def from_json(cls, data: bytes | str) -> Fault:
        """A Fault from the `x-fake-fault` header's JSON (unknown keys rejected)."""
        raw = orjson.loads(data)
        names = {f.name for f in fields(cls)}
        unknown = set(raw) - names
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        if isinstance(raw.get("latency"), list):
            raw["latency"] = tuple(raw["latency"])
        return cls(**raw)


@dataclass(frozen=True, slots=True)
class ExtraUsage:
    """Usage a fake reports on top of the scripted prompt and answer, in its own wire format:
    prompt tokens read from or written to the provider's cache, and reasoning tokens."""

    cache_read: int = 0
    cache_write: int = 0
    reasoning: int = 0


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request the fake received, as it arrived on the wire."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]  # lower-cased names
    body: Any  # parsed JSON, or None when the body was not JSON
    raw: bytes


@dataclass(frozen=True, slots=True)
class Ask:
    """A request in neutral terms: what the scripted model needs to answer it."""

    model: str
    stream: bool
    prompt_texts: Sequence[str]
    last_user: str
    tool_result: str | None = None
    tools: Sequence[ScriptedTool] = ()
    tool_choice: str | None = None
    max_tokens: int | None = None
    include_usage: bool = False
    schema: dict[str, Any] | None = None  # the structured answer's JSON Schema, if asked
    n: int = 1  # choices asked for (OpenAI's `n`)
    logprobs: int | None = None  # None: not asked; else how many top_logprobs per token

    def answer(self, call_id_prefix: str = "call_") -> ScriptedAnswer:
        return script_answer(
            self.model,
            self.prompt_texts,
            self.last_user,
            self.tool_result,
            self.tools,
            self.tool_choice,
            self.max_tokens,
            call_id_prefix,
            self.schema,
        )


class BadRequest(Exception):
    """The fake rejects the request as the real provider would (400 with this message)."""


def sse(data: Any, event: str | None = None) -> bytes:
    """One server-sent event frame holding `data` as JSON (or raw text)."""
    payload = data if isinstance(data, bytes) else orjson.dumps(data)
    head = b"event: " + event.encode() + b"\n" if event else b""
    return head + b"data: " + payload + b"\n\n"


def text_of(content: Any) -> str:
    """A message's text: the string itself, or the `text` of every part of a list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def split_text(text: str, size: int = 12) -> list[str]:
    """Text in streaming-sized pieces (word-ish chunks)."""
    return [text[i : i + size] for i in range(0, len(text), size)] if text else []


def json_response(status: int, data: Any, headers: Mapping[str, str]) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(data),
        headers={**headers, "Content-Type": "application/json"},
    )

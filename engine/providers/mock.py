"""The `mock` protocol: an in-process, deterministic model with no network at all.

For the demo, for first runs without keys, and for users' own tests. Behaviour comes from
`Endpoint.options` (strings, as written in models.yaml):

- `latency_ms` (default 0): wait this long before answering (and before the first chunk).
- `fail_rate` (default 0): probability in [0, 1] that a call fails; `fail_kind` picks the
  error (`unavailable` default, `rate_limited`, `timeout`, `invalid_request`).
- `chunk_size` (default 16): characters per streamed text chunk.
- `seed` (default 0): the failure draws are a seeded sequence per endpoint, so a run replays.

The answer is derived from the request (it quotes the last user message, or the last tool
result), so a test cannot pass by accident; usage counts are realistic (about four
characters per token plus per-message overhead). When tools are offered and the caller did
not say `tool_choice: "none"`, the model calls one, the way a real model would.
`script_answer` is shared with the fake upstreams in `engine.testing.fakes`.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import zlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from engine.embedding import EmbeddingRequest, ProviderEmbedding
from engine.endpoints import Endpoint
from engine.errors import (
    InvalidRequestError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitedError,
    UnavailableError,
)
from engine.messages import (
    Choice,
    Chunk,
    FinishReason,
    ProviderResponse,
    Request,
    ToolCallDelta,
    ToolCallOut,
    Usage,
)
from engine.providers.common import JSON_OBJECT, response_schema
from engine.providers.embeddings import embed_mock
from engine.providers.scripted_json import conforming

__all__ = [
    "JSON_OBJECT",
    "MockAdapter",
    "ScriptedAnswer",
    "ScriptedTool",
    "estimate_tokens",
    "response_schema",
    "script_answer",
]

_FAILURES: dict[str, type[ProviderError]] = {
    "unavailable": UnavailableError,
    "rate_limited": RateLimitedError,
    "timeout": ProviderTimeoutError,
    "invalid_request": InvalidRequestError,
}


def _number(endpoint: Endpoint, name: str, default: float) -> float:
    """A numeric option, or a precise error naming the option and the bad value."""
    raw = endpoint.options.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise InvalidRequestError(
            f"{endpoint.provider}: mock option {name}={raw!r} is not a number",
            provider=endpoint.provider,
            model=endpoint.upstream_model,
        ) from None


def estimate_tokens(text: str) -> int:
    """About four characters per token, at least one for non-empty text."""
    return math.ceil(len(text) / 4) if text else 0


@dataclass(frozen=True, slots=True)
class ScriptedTool:
    name: str
    parameters: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ScriptedAnswer:
    """What the scripted model says: text or tool calls, finish reason, token counts."""

    text: str
    calls: tuple[ToolCallOut, ...]
    finish: FinishReason
    input_tokens: int
    output_tokens: int


def _arguments(tool: ScriptedTool, text: str) -> str:
    """Arguments that conform to the tool's parameter schema (strings say `text`)."""
    params = tool.parameters if isinstance(tool.parameters, dict) else {}
    if not isinstance(params.get("properties"), dict):
        return "{}"
    return json.dumps(conforming(params, text))


def script_answer(
    model: str,
    prompt_texts: Sequence[str],
    last_user: str,
    tool_result: str | None,
    tools: Sequence[ScriptedTool],
    tool_choice: str | None,
    max_tokens: int | None,
    call_id_prefix: str = "call_",
    schema: dict[str, Any] | None = None,
) -> ScriptedAnswer:
    """The deterministic answer a scripted model gives (shared by mock and the fakes).

    `tool_choice` is "auto", "none", "required" or a function name; `schema`, when given,
    is the JSON Schema of a structured answer (the text is then a conforming object).
    """
    input_tokens = sum(estimate_tokens(t) + 3 for t in prompt_texts) + 3
    wants_tool = tools and tool_choice != "none" and tool_result is None
    if wants_tool:
        chosen = next((t for t in tools if t.name == tool_choice), tools[0])
        call = ToolCallOut(
            f"{call_id_prefix}{chosen.name}_1", chosen.name, _arguments(chosen, last_user)
        )
        out = estimate_tokens(call.name + call.arguments) + 5
        return ScriptedAnswer("", (call,), "tool_calls", input_tokens, out)
    if tool_result is not None:
        text = f"The tool said: {tool_result}"
    else:
        text = f"{model} heard: {last_user}"
    if schema is not None:
        text = json.dumps(conforming(schema, text))
    finish: FinishReason = "stop"
    if max_tokens is not None and estimate_tokens(text) > max_tokens:
        text, finish = text[: max_tokens * 4], "length"
    return ScriptedAnswer(text, (), finish, input_tokens, max(1, estimate_tokens(text)))


def answer_for_request(request: Request, model: str) -> ScriptedAnswer:
    """The scripted answer for an engine Request (what the mock provider says)."""
    last = request.messages[-1]
    last_user = next((m.text() for m in reversed(request.messages) if m.role == "user"), "")
    tools = [ScriptedTool(t.function.name, t.function.parameters) for t in request.tools or ()]
    choice = request.tool_choice
    named = choice if isinstance(choice, str) or choice is None else choice.function.get("name")
    return script_answer(
        model,
        [m.text() for m in request.messages],
        last_user,
        last.text() if last.role == "tool" else None,
        tools,
        named,
        request.output_limit,
        schema=response_schema(request),
    )


class MockAdapter:
    """The in-process mock model; see the module docstring for its options."""

    protocol = "mock"

    def __init__(self) -> None:
        self._rngs: dict[tuple[str, str, str], random.Random] = {}

    def _maybe_fail(self, endpoint: Endpoint) -> None:
        rate = _number(endpoint, "fail_rate", 0.0)
        if rate <= 0:
            return
        seed = endpoint.options.get("seed", "0")
        key = (endpoint.provider, endpoint.upstream_model, seed)
        rng = self._rngs.setdefault(key, random.Random(f"{seed}:{key[0]}:{key[1]}"))
        if rng.random() < rate:
            kind = endpoint.options.get("fail_kind", "unavailable")
            cls = _FAILURES.get(kind, UnavailableError)
            raise cls(
                f"{endpoint.provider}: injected mock failure ({kind})",
                provider=endpoint.provider,
                model=endpoint.upstream_model,
            )

    async def _wait(self, endpoint: Endpoint) -> None:
        delay = _number(endpoint, "latency_ms", 0.0) / 1000.0
        if delay > 0:
            await asyncio.sleep(delay)

    async def complete(self, request: Request, endpoint: Endpoint) -> ProviderResponse:
        await self._wait(endpoint)
        self._maybe_fail(endpoint)
        answer = answer_for_request(request, endpoint.upstream_model)
        n = request.n or 1  # n choices, all the scripted answer, each billed
        content = answer.text if not answer.calls else None
        return ProviderResponse(
            content=content,
            tool_calls=answer.calls,
            finish_reason=answer.finish,
            usage=Usage(answer.input_tokens, answer.output_tokens * n),
            upstream_model=endpoint.upstream_model,
            response_id=f"mock-{zlib.crc32(answer.text.encode()):010d}",
            choices=tuple(Choice(i, content, answer.calls, answer.finish) for i in range(1, n)),
        )

    async def stream(self, request: Request, endpoint: Endpoint) -> AsyncIterator[Chunk]:
        await self._wait(endpoint)
        self._maybe_fail(endpoint)
        answer = answer_for_request(request, endpoint.upstream_model)
        size = max(1, int(_number(endpoint, "chunk_size", 16)))
        for start in range(0, len(answer.text), size):
            yield Chunk(content=answer.text[start : start + size])
        for index, call in enumerate(answer.calls):
            yield Chunk(tool_calls=(ToolCallDelta(index, call.id, call.name, ""),))
            for start in range(0, len(call.arguments), size):
                piece = call.arguments[start : start + size]
                yield Chunk(tool_calls=(ToolCallDelta(index, arguments=piece),))
        n = request.n or 1
        for i in range(1, n):  # further choices (n > 1), each in one piece
            calls = tuple(
                ToolCallDelta(j, c.id, c.name, c.arguments) for j, c in enumerate(answer.calls)
            )
            yield Chunk("" if calls else answer.text, calls, answer.finish, index=i)
        yield Chunk(
            finish_reason=answer.finish,
            usage=Usage(answer.input_tokens, answer.output_tokens * n),
        )

    async def embed(self, request: EmbeddingRequest, endpoint: Endpoint) -> ProviderEmbedding:
        """Deterministic vectors (engine.providers.embeddings.mock_vector)."""
        await self._wait(endpoint)
        self._maybe_fail(endpoint)
        return embed_mock(request, endpoint)

    async def warm(self, endpoint: Endpoint) -> None:
        """Nothing to open: the mock model lives in-process."""

    async def aclose(self) -> None:
        """Nothing to close."""

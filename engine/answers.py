"""Wire-neutral answer types: what adapters return (responses, chunks, tool calls, usage).

Split from engine/messages.py (the request side), which re-exports every name here. These
are slotted frozen dataclasses: built on the hot path, never validated. Besides the first
choice's content, an answer may carry its token `logprobs` (OpenAI's shape, as received: a
`Blob`) and, for a request with `n` > 1 served natively, the further `choices`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "error"]


class Blob(Mapping[str, Any]):
    """A JSON object carried through as the provider sent it (OpenAI's `logprobs`): a
    read-only mapping, compared by value and hashable, so the frozen answers holding it
    stay values (and the cache codec stores it as the object it is)."""

    __slots__ = ("value",)

    def __init__(self, value: Mapping[str, Any]) -> None:
        self.value: dict[str, Any] = dict(value)

    def __getitem__(self, key: str) -> Any:
        return self.value[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.value)

    def __len__(self) -> int:
        return len(self.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Blob) and self.value == other.value

    def __hash__(self) -> int:
        return hash(orjson.dumps(self.value, option=orjson.OPT_SORT_KEYS))

    def __repr__(self) -> str:
        return f"Blob({self.value!r})"


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens one call used, normalised across providers (the adapters translate).

    `input_tokens` is the whole prompt, cache reads and writes included; `output_tokens`
    includes reasoning ("thinking") tokens, which every provider bills as output. The other
    three say which parts of those were cache reads, cache writes and reasoning, because
    they are priced differently (engine.pricing)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, slots=True)
class RateLimitInfo:
    """What a provider's response headers (or error body) said about its limits."""

    limit_requests: int | None = None
    remaining_requests: int | None = None
    reset_requests_s: float | None = None
    limit_input_tokens: int | None = None
    remaining_input_tokens: int | None = None
    limit_output_tokens: int | None = None
    remaining_output_tokens: int | None = None
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_tokens_s: float | None = None
    retry_after_s: float | None = None


@dataclass(frozen=True, slots=True)
class ToolCallOut:
    """A completed tool call in a response (arguments reassembled when streamed)."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ProviderResponse:
    """What one adapter call returns: the normalised answer of one upstream request."""

    content: str | None
    tool_calls: tuple[ToolCallOut, ...] = ()
    finish_reason: FinishReason = "stop"
    usage: Usage = field(default_factory=Usage)
    upstream_model: str = ""
    response_id: str = ""
    rate_limit: RateLimitInfo | None = None
    logprobs: Blob | None = None  # the first choice's, when asked for and sent
    choices: tuple[Choice, ...] = ()  # choices 1..n-1 of a request with n > 1


@dataclass(frozen=True, slots=True)
class Choice:
    """One further choice of an answer to a request with `n` > 1 (index 1 and up)."""

    index: int
    content: str | None
    tool_calls: tuple[ToolCallOut, ...] = ()
    finish_reason: FinishReason = "stop"
    logprobs: Blob | None = None


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A fragment of a streamed tool call; fragments with the same index concatenate."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class Chunk:
    """One streamed piece: text, tool-call fragments, and on the last chunks finish/usage."""

    content: str = ""
    tool_calls: tuple[ToolCallDelta, ...] = ()
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    rate_limit: RateLimitInfo | None = None
    logprobs: Blob | None = None  # this piece's token logprobs, when asked for
    index: int = 0  # the choice it belongs to (n > 1 streams interleave them)


class StreamAccumulator:
    """Rebuilds a ProviderResponse from chunks (tool-call fragments reassembled by index;
    logprobs pieces joined; the chunks of further choices (n > 1) rebuilt apart)."""

    __slots__ = ("_calls", "_finish", "_logprobs", "_model", "_others", "_text", "_usage")

    def __init__(self, upstream_model: str = "") -> None:
        self._text: list[str] = []
        self._calls: dict[int, list[str]] = {}
        self._finish: FinishReason = "stop"
        self._usage = Usage()
        self._model = upstream_model
        self._logprobs: list[Any] | None = None
        self._others: dict[int, StreamAccumulator] | None = None

    def add(self, chunk: Chunk) -> None:
        if chunk.index:
            self._add_other(chunk)
            return
        if chunk.content:
            self._text.append(chunk.content)
        for d in chunk.tool_calls:
            slot = self._calls.setdefault(d.index, ["", "", ""])
            slot[0] = d.id or slot[0]
            slot[1] = d.name or slot[1]
            slot[2] += d.arguments
        if chunk.finish_reason is not None:
            self._finish = chunk.finish_reason
        if chunk.usage is not None:
            self._usage = chunk.usage
        if chunk.logprobs is not None:
            if self._logprobs is None:
                self._logprobs = []
            self._logprobs += chunk.logprobs.get("content") or ()

    def _add_other(self, chunk: Chunk) -> None:
        """A chunk of choice 1 and up: its own accumulator (the usage is the answer's)."""
        if chunk.usage is not None:
            self._usage = chunk.usage
        if self._others is None:
            self._others = {}
        other = self._others.get(chunk.index)
        if other is None:
            other = self._others[chunk.index] = StreamAccumulator()
        other.add(Chunk(chunk.content, chunk.tool_calls, chunk.finish_reason, None, None,
                        chunk.logprobs))  # fmt: skip

    def result(self) -> ProviderResponse:
        calls = tuple(ToolCallOut(i, n, a) for _, (i, n, a) in sorted(self._calls.items()))
        return ProviderResponse(
            content="".join(self._text) if self._text or not calls else None,
            tool_calls=calls,
            finish_reason=self._finish,
            usage=self._usage,
            upstream_model=self._model,
            logprobs=None if self._logprobs is None else _logprobs(self._logprobs),
            choices=self._choices(),
        )

    def _choices(self) -> tuple[Choice, ...]:
        if not self._others:
            return ()
        done = [(i, acc.result()) for i, acc in sorted(self._others.items())]
        return tuple(
            Choice(i, r.content, r.tool_calls, r.finish_reason, r.logprobs) for i, r in done
        )


def _logprobs(content: list[Any]) -> Blob:
    """OpenAI's `logprobs` object for a choice's joined token entries."""
    return Blob({"content": content, "refusal": None})

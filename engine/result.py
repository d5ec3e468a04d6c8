"""What the engine returns to callers: a normalised response and streamed events.

Both carry the routing facts (which provider and model answered, attempts, cost, cache,
policy and rule) and convert to OpenAI's chat.completion / chat.completion.chunk dicts,
which is what the server sends and what most callers already parse.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.errors import AttemptRecord
from engine.messages import Blob, Choice, Chunk, FinishReason, ToolCallOut, Usage
from engine.pricing import CostBreakdown


def _tool_calls_openai(calls: tuple[ToolCallOut, ...]) -> list[dict[str, Any]]:
    return [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in calls
    ]


def _usage_openai(usage: Usage) -> dict[str, Any]:
    out: dict[str, Any] = {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
    }
    if usage.cache_read_tokens:  # OpenAI's own shape; cache writes have no field there
        out["prompt_tokens_details"] = {"cached_tokens": usage.cache_read_tokens}
    if usage.reasoning_tokens:
        out["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    return out


class Metadata(Mapping[str, str]):
    """A read-only, hashable str -> str mapping (a Response stays a hashable value)."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, str] | None = None) -> None:
        self._items = dict(items or {})

    def __getitem__(self, key: str) -> str:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(frozenset(self._items.items()))

    def __repr__(self) -> str:
        return f"Metadata({self._items!r})"


#: The metadata of a response no hook annotated: shared, read-only, free to build.
NO_METADATA = Metadata()


@dataclass(frozen=True, slots=True)
class Response:
    """The answer to one engine call, after routing, retries and failover."""

    content: str | None
    tool_calls: tuple[ToolCallOut, ...]
    finish_reason: FinishReason
    usage: Usage
    cost_usd: float | None  # None when the model's price is unknown
    provider: str
    model: str  # "provider/name"
    latency_ms: float
    attempts: tuple[AttemptRecord, ...] = ()
    cached: bool = False
    policy: str | None = None
    rule: str | None = None
    id: str = ""
    created: int = field(default_factory=lambda: int(time.time()))
    #: What `after_response` hooks added (the server sends it as x-engine-meta-* headers).
    metadata: Metadata = NO_METADATA
    cost_breakdown: CostBreakdown | None = None  # cost_usd per kind of token, when priced
    logprobs: Blob | None = None  # the first choice's token logprobs, when asked and given
    choices: tuple[Choice, ...] = ()  # choices 1..n-1 of a request with n > 1

    def to_openai(self) -> dict[str, Any]:
        """This response as an OpenAI `chat.completion` object (every choice)."""
        choices = [
            _choice_openai(0, self.content, self.tool_calls, self.finish_reason, self.logprobs)
        ]
        for c in self.choices:  # a request with n > 1 (no generator built for the usual one)
            choices.append(
                _choice_openai(c.index, c.content, c.tool_calls, c.finish_reason, c.logprobs)
            )
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "usage": _usage_openai(self.usage),
        }


def _choice_openai(
    index: int,
    content: str | None,
    calls: tuple[ToolCallOut, ...],
    finish: FinishReason,
    logprobs: Blob | None,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if calls:
        message["tool_calls"] = _tool_calls_openai(calls)
    return {
        "index": index,
        "message": message,
        "logprobs": None if logprobs is None else logprobs.value,
        "finish_reason": finish,
    }


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One streamed chunk, with the routing facts known once the stream has started."""

    chunk: Chunk
    provider: str
    model: str
    id: str = ""
    created: int = 0
    cost_usd: float | None = None  # set on the final event, when usage is known
    attempts: tuple[AttemptRecord, ...] = ()  # set on the first and final events
    cached: bool = False
    policy: str | None = None
    rule: str | None = None

    @property
    def content(self) -> str:
        return self.chunk.content

    def to_openai(self) -> dict[str, Any]:
        """This event as an OpenAI `chat.completion.chunk` object."""
        c = self.chunk
        delta: dict[str, Any] = {}
        if c.content:
            delta["content"] = c.content
        if c.tool_calls:
            delta["tool_calls"] = [
                {
                    "index": d.index,
                    **({"id": d.id, "type": "function"} if d.id else {}),
                    "function": {
                        **({"name": d.name} if d.name else {}),
                        "arguments": d.arguments,
                    },
                }
                for d in c.tool_calls
            ]
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": c.index,
                    "delta": delta,
                    "logprobs": None if c.logprobs is None else c.logprobs.value,
                    "finish_reason": c.finish_reason,
                }
            ],
        }

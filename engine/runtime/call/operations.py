"""Adapter operations: what one try does with its adapter, the only part of a call that
differs between endpoints.

The failover loop (failover.py) is generic over an `Operation`: it walks the candidates,
admits and retries each try, and hands the operation an open `Attempt` (its rendered
request, its endpoint). The operation makes one adapter call and, when the upstream
answered in full, tells the attempt its usage (`attempt.answered`) so that leaving the
attempt settles it. An operation that `holds` returns with the attempt still open (a
stream: the caller relays the rest and closes it); one that does not has its attempt closed
by the loop before the answer is returned.

Another endpoint (embeddings, Responses, Messages, legacy completions) is one more class
here with its own adapter method; the loop, admission, retries and records are shared.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Generic, NamedTuple, Protocol, TypeVar

from engine.frozen import builder
from engine.messages import Chunk, ProviderResponse
from engine.providers.base import Adapter
from engine.runtime.call.attempt import Attempt

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class Operation(Protocol[T_co]):
    """One adapter call inside an open attempt."""

    @property
    def holds(self) -> bool:
        """True when the answer is relayed later, inside the still-open attempt."""
        ...

    async def __call__(self, adapter: Adapter, attempt: Attempt) -> T_co: ...


class Answer(NamedTuple, Generic[T]):
    """The failover loop's result: the try that answered and what its operation returned.
    `held` is the still-open attempt's exit (an AsyncExitStack) when the operation holds."""

    attempt: Attempt
    value: T
    held: AsyncExitStack | None


# One per call, built by name without a keyword dict (engine/frozen.py).
make_answer = builder(Answer)


class Complete:
    """The non-streaming chat call: one request, one whole answer."""

    holds = False

    async def __call__(self, adapter: Adapter, attempt: Attempt) -> ProviderResponse:
        resp = await adapter.complete(attempt.request, attempt.endpoint)
        attempt.answered(resp.usage, resp.rate_limit)
        return resp


class Opened(NamedTuple):
    """A stream whose first chunk has arrived (None: the upstream sent none at all)."""

    first: Chunk | None
    chunks: AsyncIterator[Chunk]


class OpenStream:
    """The streaming chat call, up to its first chunk: failures before it fail over like
    any other; the attempt stays open while the rest is relayed (stream.py)."""

    holds = True

    async def __call__(self, adapter: Adapter, attempt: Attempt) -> Opened:
        chunks = adapter.stream(attempt.request, attempt.endpoint)
        first = await anext(chunks, None)
        attempt.first_token()
        return Opened(first=first, chunks=chunks)


COMPLETE = Complete()
OPEN_STREAM = OpenStream()

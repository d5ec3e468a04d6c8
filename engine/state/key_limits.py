"""Per-client-key request limits: requests and tokens per minute, and requests in flight.

A client key may carry `rpm`, `tpm` and `max_concurrent` (server.yaml or the admin API).
The server asks `admit` before it routes a request and calls `done` when the answer (or
the stream) has ended; a refusal is `KeyLimitedError` naming the limit and when to retry,
which the server turns into a 429 with Retry-After.

Windows slide over the last 60 seconds. A request books its estimated tokens (input
estimate plus `max_tokens`) when admitted, and `done` replaces them by the real usage.
A token limit refuses a request only while the window already holds tokens, so one request
larger than the whole limit still runs when the key is idle (as provider limits behave).

`InProcessKeyLimiter` counts for one process; `RedisKeyLimiter` (engine/state/
redis_key_limits.py) counts in the shared store, where every worker and replica books
into the same windows, and an in-flight slot of a replica that died expires by itself.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

from engine.clock import Clock

WINDOW_S = 60.0


@dataclass(frozen=True, slots=True)
class KeyLimits:
    """One key's request limits (None: no such limit)."""

    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None

    @property
    def limited(self) -> bool:
        return not (self.rpm is None and self.tpm is None and self.max_concurrent is None)


@dataclass(frozen=True, slots=True)
class Ticket:
    """One admitted request: give it back with `done`."""

    key_id: str
    token: str
    tokens: int


class KeyLimitedError(Exception):
    """A key is at one of its limits; `retry_after_s` says when room is expected."""

    def __init__(self, key_id: str, limit: str, retry_after_s: float) -> None:
        super().__init__(f"API key {key_id!r} is at its {limit} limit; retry after the window")
        self.key_id = key_id
        self.limit = limit
        self.retry_after_s = max(1.0, retry_after_s)


class KeyLimiter(Protocol):
    """Requests and tokens per minute and concurrency, per client key."""

    async def admit(self, key_id: str, limits: KeyLimits, tokens: int) -> Ticket:
        """Book one request with its token estimate, or raise KeyLimitedError."""
        ...

    async def done(self, ticket: Ticket, tokens: int) -> None:
        """The request ended having used `tokens`; frees its in-flight slot (idempotent)."""
        ...

    async def aclose(self) -> None: ...


@dataclass
class _Key:
    requests: deque[tuple[float, str]] = field(default_factory=deque)  # (time, token)
    tokens: dict[str, int] = field(default_factory=dict)  # token -> n, while in the window
    in_flight: set[str] = field(default_factory=set)
    #: The tokens in the window, kept as entries come and go (summing them on every
    #: request cost O(requests per minute)).
    used: int = 0


class InProcessKeyLimiter:
    """`KeyLimiter` for one process (the default without a shared store)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._keys: dict[str, _Key] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count()

    async def admit(self, key_id: str, limits: KeyLimits, tokens: int) -> Ticket:
        now = self._clock.time()
        with self._lock:
            key = self._keys.setdefault(key_id, _Key())
            self._expire(key, now)
            if limits.max_concurrent is not None and len(key.in_flight) >= limits.max_concurrent:
                raise KeyLimitedError(key_id, "max_concurrent", 1.0)
            oldest = key.requests[0][0] if key.requests else now
            if limits.rpm is not None and len(key.requests) >= limits.rpm:
                raise KeyLimitedError(key_id, "rpm", oldest + WINDOW_S - now)
            if limits.tpm is not None and key.used and key.used + tokens > limits.tpm:
                raise KeyLimitedError(key_id, "tpm", oldest + WINDOW_S - now)
            token = str(next(self._ids))
            key.requests.append((now, token))
            key.tokens[token] = tokens
            key.used += tokens
            key.in_flight.add(token)
        return Ticket(key_id, token, tokens)

    async def done(self, ticket: Ticket, tokens: int) -> None:
        with self._lock:
            key = self._keys.get(ticket.key_id)
            if key is None or ticket.token not in key.in_flight:
                return
            key.in_flight.discard(ticket.token)
            booked = key.tokens.get(ticket.token)
            if booked is not None:
                key.tokens[ticket.token] = tokens
                key.used += tokens - booked

    @staticmethod
    def _expire(key: _Key, now: float) -> None:
        """Requests that left the window, and their tokens (each request has both)."""
        while key.requests and key.requests[0][0] <= now - WINDOW_S:
            _, token = key.requests.popleft()
            key.used -= key.tokens.pop(token, 0)

    async def aclose(self) -> None:
        """Nothing to give back."""

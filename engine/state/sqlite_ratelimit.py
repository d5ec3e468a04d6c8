"""Provider-key rate limits in one SQLite file, shared by every worker process of a host.

Why: `engine serve --workers N` runs N processes against the same provider keys. Giving
each a fixed 1/N of every limit stays within the limit, but wastes it whenever the kernel
spreads connections unevenly (measured: 6 of 20 allowed requests admitted when one worker
got them all). Here every worker checks and books in one file: the whole pool's check
and the booking happen in one `BEGIN IMMEDIATE` transaction, which SQLite lets one process
at a time through, so no two workers can take the last slot. The window, the learned
limits, the remaining figures and the Retry-After blocks are the in-process limiter's own
(engine/state/sqlite_limits_sql.py loads the rows into its objects); only where they are
kept differs, so a limit learned or a block set by one worker holds for all.

Waiting stays per worker, as with Redis: requests that find no room queue in FIFO order
(an asyncio lock per provider); the head naps until the window says room may appear, is
woken early by this worker's settle, release or headers, and looks again at least every
`POLL_S`, since another worker's refund can make room sooner. A transaction that finds
the file free runs at once; one that must wait for another process's lock waits on a
private thread, never blocking the event loop (sqlite_shared.py). When the file cannot be used, the
worker falls back to its own share of every limit (`fallback`, an in-process limiter with
share 1/N) with a warning, counted in `status` as `fallbacks`: a rate limit is a courtesy
to the provider, not money.

A worker killed mid-call leaves its booking in the window (it leaves after 60 s, as the
provider's count does) and its request counted as in flight; that count only breaks ties
between keys and shows in `status`, it never refuses a request.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.clock import Clock
from engine.errors import RateLimitedError
from engine.messages import RateLimitInfo
from engine.plan.values import KeyPlan
from engine.state import sqlite_limits_sql as sql
from engine.state.protocols import Lease, RateLimiter
from engine.state.ratelimit.observed import ObserveThrottle
from engine.state.ratelimit.queue import WaitQueue
from engine.state.ratelimit.window import Amounts, amounts
from engine.state.sqlite_shared import SharedFile

log = logging.getLogger(__name__)

#: The longest a waiting request goes without looking at the shared window again.
POLL_S = 0.25
#: The shortest nap, so a wait never spins on a clock that has not moved.
MIN_NAP_S = 0.01


@dataclass(frozen=True, slots=True)
class _FileLease(Lease):
    """A lease booked in the file: its slice, and a local id that makes closing idempotent."""

    booked: sql.Booked
    ident: int


class SQLiteRateLimiter:
    """`RateLimiter` over a file every worker opens; `fallback` serves while it cannot."""

    def __init__(self, path: str | Path, clock: Clock, fallback: RateLimiter) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._fallback = fallback
        self._file = SharedFile(self.path, sql.SCHEMA, "limits-sqlite")
        self._queues: dict[str, asyncio.Lock] = {}
        self._naps: dict[str, WaitQueue] = {}
        self._keys: dict[str, tuple[KeyPlan, ...]] = {}
        self._open: set[int] = set()
        self._pruned: dict[str, int] = {}  # provider -> the window cutoff last pruned to
        self._ids = itertools.count(1)
        self._observe_due = ObserveThrottle()
        self.fallbacks = 0  # acquisitions served by the local share because the file failed

    def __repr__(self) -> str:
        return f"SQLiteRateLimiter({self.path.name!r})"

    def _pool(self, provider: str, keys: Sequence[KeyPlan]) -> tuple[KeyPlan, ...]:
        pool = tuple(keys) or (KeyPlan(id=f"{provider}#0", secret=None),)
        self._keys[provider] = pool
        return pool

    def register(self, provider: str, keys: Sequence[KeyPlan]) -> None:
        """Remember the pool so `status` lists it; the fallback learns it too."""
        self._pool(provider, keys)
        self._fallback.register(provider, keys)

    def try_acquire_nowait(
        self, provider: str, keys: Sequence[KeyPlan], input_tokens: int, output_tokens: int
    ) -> Lease | None:
        """No fast path: every lease is booked in the file, off the event loop."""
        return None

    async def acquire(
        self,
        provider: str,
        keys: Sequence[KeyPlan],
        input_tokens: int,
        output_tokens: int,
        max_wait_s: float,
    ) -> Lease:
        """Book on the key with most headroom; queue (FIFO, this worker) up to max_wait_s."""
        pool = self._pool(provider, keys)
        need = amounts(1, max(input_tokens, 0), max(output_tokens, 0))
        deadline = self._clock.time() + max(max_wait_s, 0.0)
        queue = self._queues.setdefault(provider, asyncio.Lock())
        if not queue.locked():
            lease, ready = await self._try(provider, pool, need)
            if lease is not None:
                return lease
            if max_wait_s <= 0:
                raise self._limited(provider, ready, 0.0)
        async with queue:
            return await self._wait(provider, pool, need, deadline, max_wait_s)

    async def _wait(
        self,
        provider: str,
        pool: tuple[KeyPlan, ...],
        need: Amounts,
        deadline: float,
        max_wait_s: float,
    ) -> Lease:
        nap = self._naps.setdefault(provider, WaitQueue())
        while True:
            lease, ready, in_flight = await self._attempt(provider, pool, need)
            if lease is not None:
                return lease
            now = self._clock.time()
            # Waiting past the deadline helps only if a lease in flight may come back sooner.
            hopeless = ready > deadline and in_flight == 0
            if now >= deadline or hopeless:
                raise self._limited(provider, ready, max_wait_s)
            await nap.nap(self._clock, min(max(min(ready, deadline) - now, MIN_NAP_S), POLL_S))

    async def _try(
        self, provider: str, pool: tuple[KeyPlan, ...], need: Amounts
    ) -> tuple[Lease | None, float]:
        lease, ready, _ = await self._attempt(provider, pool, need)
        return lease, ready

    async def _attempt(
        self, provider: str, pool: tuple[KeyPlan, ...], need: Amounts
    ) -> tuple[Lease | None, float, int]:
        """One check-and-book: (a lease, ...) or (None, when room may appear, in flight)."""
        now = self._clock.time()
        cut = sql.cutoff(now)
        prune = self._pruned.get(provider) != cut  # once per slice, not per call
        self._pruned[provider] = cut
        try:
            got = await self._file.run(
                lambda conn: sql.book(conn, provider, pool, need, now, prune)
            )
        except sqlite3.Error as exc:
            return await self._degraded(provider, pool, need, exc), now, 0
        if got.booked is None or got.key is None:
            return None, got.ready, got.in_flight
        ident = next(self._ids)
        self._open.add(ident)
        return _FileLease(provider, got.key, need[1], need[2], got.booked, ident), now, 0

    async def _degraded(
        self, provider: str, pool: tuple[KeyPlan, ...], need: Amounts, exc: BaseException
    ) -> Lease:
        self.fallbacks += 1
        log.warning(
            "rate-limit file %s unusable (%s: %s); provider %r limited by this worker's share",
            self.path.name, type(exc).__name__, exc, provider,
        )  # fmt: skip
        return await self._fallback.acquire(provider, pool, need[1], need[2], 0.0)

    def _limited(self, provider: str, ready: float, allowed: float) -> RateLimitedError:
        wait_s = max(ready - self._clock.time(), 0.0)
        return RateLimitedError(
            f"every key of provider {provider!r} is at its rate limit across workers "
            f"(may wait {allowed:.2f}s; next room in {wait_s:.2f}s)",
            provider=provider,
            retry_after=wait_s,
            code="client_rate_limit",
        )

    async def settle(self, lease: Lease, input_tokens: int, output_tokens: int) -> None:
        """Correct the booked slice with the real usage (once)."""
        if not isinstance(lease, _FileLease):
            await self._fallback.settle(lease, input_tokens, output_tokens)
            return
        real_in, real_out = max(input_tokens, 0), max(output_tokens, 0)
        delta = amounts(0, real_in - lease.input_tokens, real_out - lease.output_tokens)
        await self._finish(lease, delta)

    async def release(self, lease: Lease) -> None:
        """Take the request back from the window: it was never sent."""
        if not isinstance(lease, _FileLease):
            await self._fallback.release(lease)
            return
        await self._finish(lease, amounts(-1, -lease.input_tokens, -lease.output_tokens))

    async def _finish(self, lease: _FileLease, delta: Amounts) -> None:
        if lease.ident not in self._open:
            return
        self._open.discard(lease.ident)
        now = self._clock.time()
        try:
            await self._file.run(
                lambda conn: sql.close(conn, lease.provider, lease.booked, delta, now)
            )
        except sqlite3.Error as exc:  # the booking stays, and leaves the window in 60 s
            log.warning("rate-limit file %s: could not close a lease (%s)", self.path.name, exc)
        self._wake(lease.provider)

    def _wake(self, provider: str) -> None:
        nap = self._naps.get(provider)
        if nap is not None:
            nap.notify()

    async def observe(self, provider: str, key_id: str, info: RateLimitInfo) -> None:
        """Store what the headers said for every worker. A Retry-After or a new limit is
        written at once; the mere `remaining` countdown of a busy key at most every
        OBSERVE_EVERY_S (ratelimit/observed.py; bookings count it down meanwhile), which
        saves a transaction on most calls."""
        now = self._clock.time()
        if not self._observe_due.due(provider, key_id, info, now):
            return
        await self._fallback.observe(provider, key_id, info)  # ready if the file fails
        try:
            await self._file.run(lambda conn: sql.observe(conn, provider, key_id, info, now))
        except sqlite3.Error as exc:
            log.warning("rate-limit file %s: could not store headers (%s)", self.path.name, exc)
        self._wake(provider)

    async def status(self, provider: str) -> dict[str, Any]:
        """Per key id: limit, remaining and used per dimension across every worker."""
        pool = self._keys.get(provider, ())
        queue = self._queues.get(provider)
        now = self._clock.time()
        out: dict[str, Any] = {"provider": provider, "queued": int(bool(queue and queue.locked()))}
        out["shared"] = "sqlite"
        out["fallbacks"] = self.fallbacks
        try:
            out["keys"] = await self._file.run(lambda conn: sql.status(conn, provider, pool, now))
        except sqlite3.Error:
            out["keys"] = {k.id: {"error": "rate-limit file unusable"} for k in pool}
        return out

    async def aclose(self) -> None:
        await self._file.aclose()
        await self._fallback.aclose()

"""`InProcessRateLimiter`: the rate-limit protocol for one process, composed of the window,
the learned limits, the key choice and the FIFO queue (see the package docstring).

One limiter serves one event loop (the engine's sync API runs on a single loop thread, so
that holds). Nothing here blocks, nothing needs I/O, so its async methods never suspend
except to wait in the queue, and it offers the protocol's synchronous fast path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.clock import Clock
from engine.errors import RateLimitedError
from engine.frozen import builder
from engine.messages import RateLimitInfo
from engine.plan.values import KeyPlan
from engine.state.protocols import Lease
from engine.state.ratelimit.keys import KeyState, choose, key_status, ready_at
from engine.state.ratelimit.queue import Waiter, WaitQueue
from engine.state.ratelimit.window import Amounts, Use


@dataclass(frozen=True, slots=True)
class _Lease(Lease):
    """A Lease that remembers its key state and footprint, so settle corrects exactly it."""

    state: KeyState
    use: Use


# One per try: builder() skips the frozen dataclass's per-field object.__setattr__
# (engine/frozen.py).
_lease = builder(_Lease)


@dataclass(slots=True)
class _Pool:
    """One provider's key states and its queue of waiters."""

    share: float
    states: dict[str, KeyState] = field(default_factory=dict)
    queue: WaitQueue = field(default_factory=WaitQueue)

    def bind(self, keys: Sequence[KeyPlan]) -> list[KeyState]:
        """The states for these keys; a reloaded plan's new limits replace the old."""
        out = []
        for key in keys:
            state = self.states.get(key.id)
            if state is None:
                state = self.states[key.id] = KeyState.of(key, self.share)
            elif state.key is not key:
                state.rebind(key)
            out.append(state)
        return out

    def in_flight(self) -> int:
        return sum(s.in_flight for s in self.states.values())


class InProcessRateLimiter:
    """Rate limits for one process. Implements `engine.state.protocols.RateLimiter`."""

    def __init__(self, clock: Clock, share: float = 1.0) -> None:
        """`share`: the part of each key's limits this process may use; a worker of `engine
        serve --workers N` uses 1/N while the shared limits file cannot be used."""
        if not 0.0 < share <= 1.0:
            raise ValueError(f"share must be in (0, 1], got {share!r}")
        self._clock = clock
        self._share = share
        self._pools: dict[str, _Pool] = {}
        #: provider -> the keys last bound, their pool and states (see `_bind`)
        self._bound: dict[str, tuple[Sequence[KeyPlan], _Pool, list[KeyState]]] = {}

    def _pool(self, provider: str) -> _Pool:
        pool = self._pools.get(provider)
        if pool is None:
            pool = self._pools[provider] = _Pool(self._share)
        return pool

    def _bind(self, provider: str, keys: Sequence[KeyPlan]) -> tuple[_Pool, list[KeyState]]:
        """The pool and the states of these keys. The same keys as last time (the common
        case: a provider's key tuple lives as long as its plan) reuse the states found then,
        without a lookup per key."""
        bound = self._bound.get(provider)
        if bound is not None and bound[0] is keys:
            return bound[1], bound[2]
        pool = self._pool(provider)
        states = pool.bind(keys or (KeyPlan(id=f"{provider}#0", secret=None),))
        if isinstance(keys, tuple):  # immutable, so `is` proves the same keys
            self._bound[provider] = (keys, pool, states)
        return pool, states

    def register(self, provider: str, keys: Sequence[KeyPlan]) -> None:
        """Make keys visible in `status` before their first request."""
        self._pool(provider).bind(keys)

    def try_acquire_nowait(
        self, provider: str, keys: Sequence[KeyPlan], input_tokens: int, output_tokens: int
    ) -> Lease | None:
        """A lease now, or None, having taken nothing, when no key has room or others are
        queued (then `acquire` waits its turn)."""
        pool, states = self._bind(provider, keys)
        if pool.queue.waiters:  # others wait: no barging
            return None
        return self._try(provider, states, _need(input_tokens, output_tokens))

    async def acquire(
        self,
        provider: str,
        keys: Sequence[KeyPlan],
        input_tokens: int,
        output_tokens: int,
        max_wait_s: float,
    ) -> Lease:
        """A lease on the key with most headroom; wait in FIFO order up to max_wait_s."""
        pool, states = self._bind(provider, keys)
        need = _need(input_tokens, output_tokens)
        if not pool.queue.waiters:
            lease = self._try(provider, states, need)
            if lease is not None:
                return lease
        return await self._wait(provider, pool, states, need, max_wait_s)

    def _try(self, provider: str, states: list[KeyState], need: Amounts) -> Lease | None:
        now = self._clock.monotonic()
        best = choose(states, now, need)
        if best is None:
            return None
        use = best.take(now, need)
        return _lease(
            provider=provider,
            key=best.key,
            input_tokens=need[1],
            output_tokens=need[2],
            state=best,
            use=use,
        )

    async def _wait(
        self, provider: str, pool: _Pool, states: list[KeyState], need: Amounts, max_wait_s: float
    ) -> Lease:
        turn = asyncio.get_running_loop().create_future()
        waiter = Waiter(states, need, self._clock.monotonic(), max_wait_s, turn)
        if max_wait_s <= 0:
            raise self._limited(provider, waiter)
        pool.queue.join(waiter)
        try:
            await waiter.turn  # raises RateLimitedError if the head expired us
            return await self._serve_head(provider, pool, waiter)
        finally:
            pool.queue.leave(waiter)

    async def _serve_head(self, provider: str, pool: _Pool, waiter: Waiter) -> Lease:
        """The queue's head loops: try, expire late waiters behind it, nap until ready."""
        while True:
            lease = self._try(provider, waiter.states, waiter.need)
            if lease is not None:
                return lease
            now = self._clock.monotonic()
            pool.queue.expire(now, lambda w: self._limited(provider, w))
            ready = min(ready_at(s, now, waiter.need) for s in waiter.states)
            hopeless = ready > waiter.deadline and pool.in_flight() == 0
            if now >= waiter.deadline or hopeless:
                raise self._limited(provider, waiter)
            wake = min(ready, pool.queue.next_deadline())
            await pool.queue.nap(self._clock, max(wake - now, 0.0))

    def _limited(self, provider: str, waiter: Waiter) -> RateLimitedError:
        now = self._clock.monotonic()
        ready = min(ready_at(s, now, waiter.need) for s in waiter.states)
        waited, allowed = now - waiter.start, max(waiter.max_wait_s, 0.0)
        return RateLimitedError(
            f"every key of provider {provider!r} is at its rate limit "
            f"(waited {waited:.2f}s of {allowed:.2f}s; next room in {ready - now:.2f}s)",
            provider=provider,
            retry_after=max(ready - now, 0.0),
            code="client_rate_limit",
        )

    async def settle(self, lease: Lease, input_tokens: int, output_tokens: int) -> None:
        """Correct the lease's estimate with real usage; a second settle is ignored."""
        if isinstance(lease, _Lease):
            inp = input_tokens if input_tokens > 0 else 0  # not max(): see _need
            out = output_tokens if output_tokens > 0 else 0
            self._close(lease, lease.use.requests, inp, out)

    async def release(self, lease: Lease) -> None:
        """Refund a lease whose request was never sent (cancelled, budget refused)."""
        if isinstance(lease, _Lease):
            self._close(lease, 0, 0, 0)

    def _close(self, lease: _Lease, requests: int, input_tokens: int, output_tokens: int) -> None:
        """Book what the lease really used (once), and wake a waiter it may have made room for."""
        if not lease.use.open:
            return
        lease.use.open = False
        lease.state.close(lease.use, requests, input_tokens, output_tokens)
        pool = self._pools.get(lease.provider)
        if pool is not None and pool.queue.watchers:  # only a napping queue head watches
            pool.queue.notify()

    async def observe(self, provider: str, key_id: str, info: RateLimitInfo) -> None:
        """Learn limits, remaining headroom and retry-after from a response's headers."""
        pool = self._pool(provider)
        state = pool.states.get(key_id)
        if state is None:
            unknown = KeyPlan(id=key_id, secret=None)
            state = pool.states[key_id] = KeyState.of(unknown, pool.share)
        state.limits.observe(info, self._clock.monotonic())
        if pool.queue.watchers:  # only a napping queue head watches
            pool.queue.notify()

    async def status(self, provider: str) -> dict[str, Any]:
        """Per key id (never the key): limit and remaining per dimension; queued requests."""
        pool = self._pools.get(provider) or _Pool(self._share)
        now = self._clock.monotonic()
        keys: dict[str, Any] = {}
        for key_id, state in pool.states.items():
            state.window.evict(now)
            keys[key_id] = key_status(state, now)
        return {"provider": provider, "queued": len(pool.queue), "keys": keys}

    async def aclose(self) -> None:
        """Nothing to give back (waiters end with their callers)."""


def _need(input_tokens: int, output_tokens: int) -> Amounts:
    """One request's amounts; a negative estimate counts as zero."""
    # Conditional expressions, not max(): the builtin's call costs ~700 instructions.
    inp = input_tokens if input_tokens > 0 else 0
    out = output_tokens if output_tokens > 0 else 0
    return (1, inp, out, inp + out)

"""Client-side rate limiting per provider key: requests, input and output tokens per minute.

Why on the client: a 429 costs a round trip and often a Retry-After penalty, while the
engine already knows what it is about to send. So each attempt first takes a `Lease`:

    lease = await limiter.acquire(provider, keys, est_in, est_out, max_wait_s)
    ... call the provider with lease.key ...
    await limiter.settle(lease, usage.input_tokens, usage.output_tokens)   # real usage
    await limiter.observe(provider, lease.key.id, response.rate_limit)     # what headers said

(The runtime first tries `try_acquire_nowait`, the same without waiting: most attempts
find room, and then take no coroutine. The protocol declares it; a backend may decline.)

- Windows are sliding, 60 s, kept per key as counters in 0.1 s slices (memory stays
  bounded at any request rate; usage leaves the window at most 0.1 s late, erring on the
  safe side). A lease remembers its slice, so `settle` corrects exactly its own estimate
  (token-accurate: estimate before, real usage after).
- Several keys of one provider form a pool; a lease goes to the key with the most headroom
  left after this request (ties: fewest in flight, then fewest in the window, then order).
- Limits come from the plan (`KeyPlan.rpm/input_tpm/output_tpm`) and from provider headers
  (`observe`): a learned limit tightens the configured one, a `remaining` count applies
  until its reset, a `retry-after` blocks the key. Keys with neither are unlimited.
- When no key has room, callers queue per provider in FIFO order (no barging: a newcomer
  never overtakes a waiter). The head of the queue sleeps on the injected clock until the
  earliest moment a key frees up, or until a settle/observe may have freed one. A waiter
  whose `max_wait_s` runs out gets `RateLimitedError` (with `retry_after`); it gets it at
  once when the next free moment is past its deadline and no in-flight lease could free
  capacity sooner, since waiting could not help.

One limiter serves one event loop (the engine's sync API runs on a single loop thread, so
that holds); nothing here blocks, and waiting is `clock.sleep`. A shared backend (Redis
hashes per key and dimension, checked by a Lua script) can implement the same protocol;
see docs/state.md.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.clock import Clock
from engine.errors import RateLimitedError
from engine.frozen import builder
from engine.messages import RateLimitInfo
from engine.plan.values import KeyPlan
from engine.state.protocols import Lease

WINDOW_S = 60.0
#: Width of the window's time slices: usage leaves the window at most this late.
RESOLUTION_S = 0.1
#: How long a `remaining` header applies when the provider gave no reset time.
DEFAULT_RESET_S = WINDOW_S
#: The four dimensions a key is limited on; "tokens" is input+output (OpenAI's TPM).
DIMENSIONS: tuple[str, ...] = ("requests", "input_tokens", "output_tokens", "tokens")


@dataclass(slots=True)
class _Bucket:
    """Usage of one key in one RESOLUTION_S slice of time."""

    end: float  # the slice's end; it leaves the window at end + WINDOW_S
    requests: int = 0
    input: int = 0
    output: int = 0
    live: bool = True  # still inside the window


@dataclass(slots=True)
class _Use:
    """One lease's booked footprint and the bucket holding it; corrected by settle."""

    bucket: _Bucket
    requests: int
    input: int
    output: int
    open: bool = True  # not yet settled or released


@dataclass(slots=True)
class _Learned:
    """What headers said about one dimension of one key."""

    limit: int | None = None
    remaining: int | None = None
    reset_at: float = 0.0


def _configured(key: KeyPlan) -> dict[str, int | None]:
    return {
        "requests": key.rpm,
        "input_tokens": key.input_tpm,
        "output_tokens": key.output_tpm,
        "tokens": None,
    }


@dataclass(slots=True)
class _KeyState:
    key: KeyPlan
    configured: dict[str, int | None] = field(default_factory=dict)
    #: min(configured, learned) per dimension, kept in step by rebind and observe (the
    #: hot path reads it on every attempt; limits change only when those run).
    limits: dict[str, int | None] = field(default_factory=dict)
    #: The dimensions with a limit or a provider's `remaining` (the others never refuse),
    #: each with its position in DIMENSIONS; kept in step like `limits`.
    watched: tuple[tuple[str, int, _Learned], ...] = ()
    #: The dimensions with a provider's `remaining` (once set, it stays set), likewise.
    hinted: tuple[tuple[_Learned, int], ...] = ()
    buckets: deque[_Bucket] = field(default_factory=deque)
    used: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DIMENSIONS, 0))
    learned: dict[str, _Learned] = field(
        default_factory=lambda: {d: _Learned() for d in DIMENSIONS}
    )
    informed: bool = False  # headers have said something about this key
    configured_any: bool = False  # the plan sets at least one limit on this key
    blocked_until: float = 0.0
    in_flight: int = 0
    #: This process's part of every limit (1 / workers when N processes share the keys).
    share: float = 1.0

    def __post_init__(self) -> None:
        self.rebind(self.key)

    def rebind(self, key: KeyPlan) -> None:
        self.key = key
        self.configured = _configured(key)
        self.configured_any = any(v is not None for v in self.configured.values())
        self.limits = {dim: self._limit(dim) for dim in DIMENSIONS}
        self._watch()

    def _watch(self) -> None:
        learned, limits = self.learned, self.limits
        self.watched = tuple(
            (dim, i, learned[dim])
            for i, dim in enumerate(DIMENSIONS)
            if limits[dim] is not None or learned[dim].remaining is not None
        )
        self.hinted = tuple(
            (learned[dim], i)
            for i, dim in enumerate(DIMENSIONS)
            if learned[dim].remaining is not None
        )

    def unlimited(self) -> bool:
        """Nothing configured and nothing learned: the fast path skips all arithmetic."""
        return not self.informed and not self.configured_any

    def evict(self, now: float) -> None:
        buckets = self.buckets
        while buckets and buckets[0].end + WINDOW_S <= now:
            bucket = buckets.popleft()
            bucket.live = False
            self._count(-bucket.requests, -bucket.input, -bucket.output)

    def _count(self, requests: int, inp: int, out: int) -> None:
        used = self.used
        used["requests"] += requests
        used["input_tokens"] += inp
        used["output_tokens"] += out
        used["tokens"] += inp + out

    def limit(self, dim: str) -> int | None:
        return self.limits[dim]

    def _limit(self, dim: str) -> int | None:
        configured = self.configured[dim]
        learned = self.learned[dim].limit
        if configured is None:
            limit = learned
        else:
            limit = configured if learned is None else min(configured, learned)
        if limit is None or self.share >= 1.0:
            return limit
        return max(1, int(limit * self.share))

    def learn(self, dim: str, limit: int | None, remaining: int | None, reset_at: float) -> None:
        """What headers said about one dimension (nothing changes for what they left out)."""
        learned = self.learned[dim]
        if (
            remaining is not None
            and learned.remaining is not None
            and (limit is None or limit == learned.limit)
        ):  # the steady state (every answer of a provider that sends figures): only these
            learned.remaining = remaining if remaining > 0 else 0
            learned.reset_at = reset_at
            return
        hinted = learned.remaining is not None
        watched = hinted or self.limits[dim] is not None
        if limit is not None and limit > 0 and limit != learned.limit:  # else: as it was
            learned.limit = limit
            self.limits[dim] = self._limit(dim)
        if remaining is not None:
            learned.remaining = remaining if remaining > 0 else 0
            learned.reset_at = reset_at
        if not watched or (not hinted and remaining is not None):
            self._watch()  # this dimension has just become watched, or hinted

    def remaining_hint(self, dim: str, now: float) -> int | None:
        """The provider's last `remaining` for dim, while its reset has not passed."""
        learned = self.learned[dim]
        if learned.remaining is None or now >= learned.reset_at:
            return None
        return learned.remaining

    def _bucket(self, now: float) -> _Bucket:
        buckets = self.buckets
        if buckets and now < buckets[-1].end:
            return buckets[-1]
        end = (math.floor(now / RESOLUTION_S) + 1) * RESOLUTION_S
        bucket = _Bucket(end if end > now else end + RESOLUTION_S)
        buckets.append(bucket)
        return bucket

    def take(self, now: float, inp: int, out: int) -> _Use:
        buckets = self.buckets  # self._bucket(now), its common case inlined
        bucket = buckets[-1] if buckets and now < buckets[-1].end else self._bucket(now)
        bucket.requests += 1
        bucket.input += inp
        bucket.output += out
        used = self.used  # self._count(1, inp, out), inlined: this runs for every attempt
        used["requests"] += 1
        used["input_tokens"] += inp
        used["output_tokens"] += out
        used["tokens"] += inp + out
        if self.informed:
            self._spend_hints(1, inp, out, now)
        self.in_flight += 1
        return _Use(bucket, 1, inp, out)

    def correct(self, use: _Use, requests: int, inp: int, out: int, now: float) -> None:
        """Replace a lease's estimate by what really happened (requests=0: never sent)."""
        d_req, d_in, d_out = requests - use.requests, inp - use.input, out - use.output
        bucket = use.bucket
        if bucket.live:
            bucket.requests += d_req
            bucket.input += d_in
            bucket.output += d_out
            used = self.used  # self._count(d_req, d_in, d_out), inlined as in take
            used["requests"] += d_req
            used["input_tokens"] += d_in
            used["output_tokens"] += d_out
            used["tokens"] += d_in + d_out
        use.requests, use.input, use.output = requests, inp, out
        if self.informed:
            self._spend_hints(d_req, d_in, d_out, now)

    def _spend_hints(self, requests: int, inp: int, out: int, now: float) -> None:
        """Count usage against the provider's `remaining` figures still in force (a negative
        amount gives back what an estimate over-booked)."""
        # Twice per attempt of an informed key, so only the dimensions that have such a
        # figure are visited, and no max() is called.
        amounts = (requests, inp, out, inp + out)  # in DIMENSIONS order
        for hint, i in self.hinted:
            remaining = hint.remaining
            if remaining is not None and now < hint.reset_at:
                left = remaining - amounts[i]
                hint.remaining = left if left > 0 else 0


def _needs(input_tokens: int, output_tokens: int) -> dict[str, int]:
    return {
        "requests": 1,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "tokens": input_tokens + output_tokens,
    }


def _effective(need: int, limit: int | None) -> int:
    """A request larger than a whole limit waits for an empty window instead of forever."""
    return need if limit is None else min(need, limit)


def _headroom(state: _KeyState, now: float, inp: int, out: int) -> float | None:
    """Fraction of the tightest limit left after this request; None when it does not fit.

    On the hot path for every attempt, hence written flat rather than as helpers.
    """
    if not state.informed and not state.configured_any:  # state.unlimited(), inlined
        return 1.0
    if now < state.blocked_until:
        return None
    used, limits = state.used, state.limits
    needs = (1, inp, out, inp + out)  # in DIMENSIONS order
    room = 1.0
    for dim, i, learned in state.watched:  # a dimension without limit or hint has room
        need = needs[i]
        # `state.limit(dim)` and `state.remaining_hint(dim, now)` inlined: eight method
        # calls per attempt were a fifth of the limiter's cost. (A `remaining` is only
        # ever learned from headers, so it implies `informed`.)
        limit, hint = limits[dim], learned.remaining
        if hint is not None and now >= learned.reset_at:
            hint = None
        if limit is None:
            if hint is not None and need > hint:
                return None
            continue
        wanted = need if need < limit else limit
        left = limit - used[dim] - wanted
        if hint is not None and hint - wanted < left:
            left = hint - wanted
        if left < 0:  # this also refuses `wanted > hint`: then left <= hint - wanted < 0
            return None
        share = left / limit if limit else 0.0
        if share < room:
            room = share
    return room


def _ready_at(state: _KeyState, now: float, need: dict[str, int]) -> float:
    """The earliest time this key could take the request if nothing else happened."""
    ready = max(now, state.blocked_until)
    for dim in DIMENSIONS:
        limit = state.limit(dim)
        wanted = _effective(need[dim], limit)
        hint = state.remaining_hint(dim, now)
        if hint is not None and wanted > hint:
            ready = max(ready, state.learned[dim].reset_at)
        if limit is not None:
            ready = max(ready, _window_frees(state, dim, limit - wanted))
    return ready


def _window_frees(state: _KeyState, dim: str, allowed: int) -> float:
    """When enough old slices leave the window for `used[dim] <= allowed` (0.0: already)."""
    used = state.used[dim]
    if used <= allowed:
        return 0.0
    for bucket in state.buckets:
        used -= _footprint(bucket, dim)
        if used <= allowed:
            return bucket.end + WINDOW_S
    return 0.0


def _footprint(bucket: _Bucket, dim: str) -> int:
    if dim == "requests":
        return bucket.requests
    if dim == "input_tokens":
        return bucket.input
    if dim == "output_tokens":
        return bucket.output
    return bucket.input + bucket.output


@dataclass(frozen=True, slots=True)
class _Lease(Lease):
    """A Lease that remembers its footprint so settle corrects exactly this one."""

    state: _KeyState
    use: _Use


_lease = builder(_Lease)  # one per attempt: without a frozen dataclass's per-field cost


@dataclass(slots=True)
class _Waiter:
    """One queued acquire: what it wants, since when, and its turn (or its error)."""

    states: list[_KeyState]
    input_tokens: int
    output_tokens: int
    start: float
    max_wait_s: float
    turn: asyncio.Future[None]

    @property
    def deadline(self) -> float:
        return self.start + self.max_wait_s

    @property
    def need(self) -> dict[str, int]:
        return _needs(self.input_tokens, self.output_tokens)


@dataclass(slots=True)
class _Pool:
    """One provider's keys, its FIFO queue of waiters and who to wake on a change."""

    states: dict[str, _KeyState] = field(default_factory=dict)
    queue: deque[_Waiter] = field(default_factory=deque)
    watchers: list[asyncio.Future[None]] = field(default_factory=list)
    share: float = 1.0  # passed to each key's state (see InProcessRateLimiter)

    def bind(self, keys: Sequence[KeyPlan]) -> list[_KeyState]:
        """The states for these keys; a reloaded plan's new limits replace the old."""
        out = []
        for key in keys:
            state = self.states.get(key.id)
            if state is None:
                state = self.states[key.id] = _KeyState(key, share=self.share)
            elif state.key is not key:
                state.rebind(key)
            out.append(state)
        return out

    def notify(self) -> None:
        for fut in self.watchers:
            if not fut.done():
                fut.set_result(None)
        self.watchers.clear()

    def in_flight(self) -> int:
        return sum(s.in_flight for s in self.states.values())

    def pass_turn(self) -> None:
        if self.queue and not self.queue[0].turn.done():
            self.queue[0].turn.set_result(None)


class InProcessRateLimiter:
    """Rate limits for one process. Implements `engine.state.protocols.RateLimiter`."""

    def __init__(self, clock: Clock, share: float = 1.0) -> None:
        """`share`: the part of each key's limits this process may use; `engine serve
        --workers N` gives each worker 1/N, so together they stay within the limit."""
        if not 0.0 < share <= 1.0:
            raise ValueError(f"share must be in (0, 1], got {share!r}")
        self._clock = clock
        self._share = share
        self._pools: dict[str, _Pool] = {}

    def _pool(self, provider: str) -> _Pool:
        pool = self._pools.get(provider)
        if pool is None:
            pool = self._pools[provider] = _Pool(share=self._share)
        return pool

    def register(self, provider: str, keys: Sequence[KeyPlan]) -> None:
        """Make keys visible in `status` before their first request."""
        self._pool(provider).bind(keys)

    async def acquire(
        self,
        provider: str,
        keys: Sequence[KeyPlan],
        input_tokens: int,
        output_tokens: int,
        max_wait_s: float,
    ) -> Lease:
        """A lease on the key with most headroom; wait in FIFO order up to max_wait_s."""
        if not keys:
            keys = (KeyPlan(id=f"{provider}#0", secret=None),)
        pool = self._pools.get(provider) or self._pool(provider)
        states = pool.bind(keys)
        # Conditional expressions, not max(0, ...): cheaper, and this runs for every attempt.
        inp = input_tokens if input_tokens > 0 else 0
        out = output_tokens if output_tokens > 0 else 0
        if not pool.queue:
            lease = self._try(provider, states, inp, out)
            if lease is not None:
                return lease
        return await self._wait(provider, pool, states, inp, out, max_wait_s)

    def try_acquire_nowait(
        self, provider: str, keys: Sequence[KeyPlan], input_tokens: int, output_tokens: int
    ) -> Lease | None:
        """`acquire` when it needs no wait: a lease now, or None, having taken nothing, when
        no key has room or others are queued (then `acquire` waits its turn). The runtime
        tries this first: most attempts find room, and skip a coroutine each."""
        if not keys:
            keys = (KeyPlan(id=f"{provider}#0", secret=None),)
        pool = self._pools.get(provider) or self._pool(provider)
        states = pool.bind(keys)
        if pool.queue:
            return None
        inp = input_tokens if input_tokens > 0 else 0  # max(0, ...), as in acquire
        out = output_tokens if output_tokens > 0 else 0
        return self._try(provider, states, inp, out)

    def _try(self, provider: str, states: list[_KeyState], inp: int, out: int) -> Lease | None:
        now = self._clock.monotonic()
        best: _KeyState | None = None
        if len(states) == 1:  # the common single key: nothing to rank
            best = states[0]
            buckets = best.buckets
            if buckets and buckets[0].end + WINDOW_S <= now:  # evict's own test, first
                best.evict(now)
            if _headroom(best, now, inp, out) is None:
                return None
        else:
            best_rank: tuple[float, int, int] | None = None
            for state in states:
                state.evict(now)
                room = _headroom(state, now, inp, out)
                if room is None:
                    continue
                rank = (room, -state.in_flight, -state.used["requests"])
                if best_rank is None or rank > best_rank:
                    best, best_rank = state, rank
            if best is None:
                return None
        use = best.take(now, inp, out)
        return _lease(provider, best.key, inp, out, best, use)

    async def _wait(
        self,
        provider: str,
        pool: _Pool,
        states: list[_KeyState],
        inp: int,
        out: int,
        max_wait_s: float,
    ) -> Lease:
        turn = asyncio.get_running_loop().create_future()
        waiter = _Waiter(states, inp, out, self._clock.monotonic(), max_wait_s, turn)
        if max_wait_s <= 0:
            raise self._limited(provider, waiter)
        pool.queue.append(waiter)
        pool.pass_turn()
        pool.notify()  # the head re-plans its nap around this waiter's deadline
        try:
            await waiter.turn  # raises RateLimitedError if the head expired us
            return await self._serve_head(provider, pool, waiter)
        finally:
            pool.queue.remove(waiter)
            pool.pass_turn()

    async def _serve_head(self, provider: str, pool: _Pool, waiter: _Waiter) -> Lease:
        """The queue's head loops: try, expire late waiters behind it, sleep until ready."""
        states, need = waiter.states, waiter.need
        while True:
            lease = self._try(provider, states, waiter.input_tokens, waiter.output_tokens)
            if lease is not None:
                return lease
            now = self._clock.monotonic()
            self._expire(provider, pool, now)
            ready = min(_ready_at(s, now, need) for s in states)
            hopeless = ready > waiter.deadline and pool.in_flight() == 0
            if now >= waiter.deadline or hopeless:
                raise self._limited(provider, waiter)
            wake = min([ready, *(w.deadline for w in pool.queue)])
            await self._nap(pool, max(wake - now, 0.0))

    def _expire(self, provider: str, pool: _Pool, now: float) -> None:
        for waiter in list(pool.queue)[1:]:
            if now >= waiter.deadline and not waiter.turn.done():
                waiter.turn.set_exception(self._limited(provider, waiter))

    async def _nap(self, pool: _Pool, seconds: float) -> None:
        """Sleep on the clock, but wake early when a settle/observe may have freed room."""
        changed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        pool.watchers.append(changed)
        sleeper = asyncio.ensure_future(self._clock.sleep(seconds))
        try:
            await asyncio.wait({changed, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            changed.cancel()
            if changed in pool.watchers:
                pool.watchers.remove(changed)

    def _limited(self, provider: str, waiter: _Waiter) -> RateLimitedError:
        now = self._clock.monotonic()
        ready = min(_ready_at(s, now, waiter.need) for s in waiter.states)
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
            inp = input_tokens if input_tokens > 0 else 0  # max(0, ...), as in acquire
            out = output_tokens if output_tokens > 0 else 0
            self._close(lease, lease.use.requests, inp, out)

    async def release(self, lease: Lease) -> None:
        """Refund a lease whose request was never sent (cancelled, breaker open)."""
        if isinstance(lease, _Lease):
            self._close(lease, 0, 0, 0)

    def _close(self, lease: _Lease, requests: int, inp: int, out: int) -> None:
        """Book what the lease really used (once), and wake a waiter it may have made room for."""
        if not lease.use.open:
            return
        lease.use.open = False
        lease.state.in_flight -= 1
        lease.state.correct(lease.use, requests, inp, out, self._clock.monotonic())
        pool = self._pools.get(lease.provider)
        if pool is not None and pool.watchers:  # only a napping queue head watches
            pool.notify()

    async def observe(self, provider: str, key_id: str, info: RateLimitInfo) -> None:
        """Learn limits, remaining headroom and retry-after from a response's headers."""
        pool = self._pools.get(provider) or self._pool(provider)
        state = pool.states.get(key_id)
        if state is None:
            unknown = KeyPlan(id=key_id, secret=None)
            state = pool.states[key_id] = _KeyState(unknown, share=pool.share)
        now = self._clock.monotonic()
        state.informed = True
        # Runs for every answer that carried headers: a dimension they say nothing about
        # (both figures None) is skipped without a call.
        limit, remaining = info.limit_requests, info.remaining_requests
        if limit is not None or remaining is not None:
            reset_at = now + (info.reset_requests_s or DEFAULT_RESET_S)
            state.learn("requests", limit, remaining, reset_at)
        tokens_reset = now + (info.reset_tokens_s or DEFAULT_RESET_S)
        limit, remaining = info.limit_input_tokens, info.remaining_input_tokens
        if limit is not None or remaining is not None:
            state.learn("input_tokens", limit, remaining, tokens_reset)
        limit, remaining = info.limit_output_tokens, info.remaining_output_tokens
        if limit is not None or remaining is not None:
            state.learn("output_tokens", limit, remaining, tokens_reset)
        limit, remaining = info.limit_tokens, info.remaining_tokens
        if limit is not None or remaining is not None:
            state.learn("tokens", limit, remaining, tokens_reset)
        if info.retry_after_s is not None and info.retry_after_s > 0:
            state.blocked_until = max(state.blocked_until, now + info.retry_after_s)
        if pool.watchers:
            pool.notify()

    async def status(self, provider: str) -> dict[str, Any]:
        """Per key id (never the key): limit and remaining per dimension; queued requests."""
        pool = self._pools.get(provider) or _Pool()
        now = self._clock.monotonic()
        keys: dict[str, Any] = {}
        for key_id, state in pool.states.items():
            state.evict(now)
            keys[key_id] = _key_status(state, now)
        return {"provider": provider, "queued": len(pool.queue), "keys": keys}

    async def aclose(self) -> None:
        """Nothing to give back (waiters end with their callers)."""


def _key_status(state: _KeyState, now: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dim in DIMENSIONS:
        limit = state.limit(dim)
        remaining = None if limit is None else max(0, limit - state.used[dim])
        hint = state.remaining_hint(dim, now)
        if hint is not None:
            remaining = hint if remaining is None else min(remaining, hint)
        out[dim] = {"limit": limit, "remaining": remaining, "used": state.used[dim]}
    out["in_flight"] = state.in_flight
    out["blocked_for_s"] = max(0.0, state.blocked_until - now)
    return out

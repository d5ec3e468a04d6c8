"""Provider-key rate limits in Redis, shared by every replica: one script checks and books.

Why: a provider counts every replica's requests against one key, so N replicas each with
their own window would send N times the limit. Here one Lua script, run atomically by
Redis on its own clock, checks every key of the pool (requests, input, output and total
tokens per minute; limits configured in the plan or learned from headers; the provider's
`remaining` figures until their reset; Retry-After blocks), picks the key with the most
headroom and books the request in the same step, so no two replicas can take the last
slot. The window is 60 one-second slices per key (the in-process limiter uses 0.1 s:
coarser here to keep the script's work small); settle corrects the booked slice with the
real usage, release takes the request back. Those corrections ride on this replica's next
booking on the key (the same script), or go by themselves within CLOSE_DELAY_S; and a key
with plenty of room books several requests ahead for this replica (redis_grants).

Waiting stays per replica: requests that find no room queue in FIFO order (an asyncio
lock per provider), the head sleeps until the script says room may appear, and a local
settle or release wakes it early. When Redis cannot be reached, the limiter falls back
to a local in-process share (`fallback`) with a warning and a counter (`status`
reports it): a rate limit is a courtesy to the provider, not money, so it degrades
rather than refuse every call.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from engine.clock import Clock
from engine.errors import RateLimitedError
from engine.messages import RateLimitInfo
from engine.plan.values import KeyPlan
from engine.state.protocols import Lease, RateLimiter
from engine.state.ratelimit.learned import MAX_BLOCK_S
from engine.state.ratelimit.observed import ObserveThrottle
from engine.state.ratelimit.queue import WaitQueue
from engine.state.redis_common import KeyNames, connect, packed, tag
from engine.state.redis_grants import Ahead, Closing, Grant
from engine.state.redis_limits_lua import (
    ACQUIRE,
    CLOSE,
    HISTORY,
    OBSERVE,
    STATE,
    STATUS,
)
from engine.state.redis_scripts import Arg, Script, Scripts, scripts_for

log = logging.getLogger(__name__)

_DIMENSIONS = ("requests", "input_tokens", "output_tokens", "tokens")


@dataclass(frozen=True, slots=True)
class _SharedLease(Lease):
    """A lease booked in Redis: which slice it went into, and a local id for idempotency."""

    slot: int
    ident: int


def _limit(value: int | None) -> int:
    return -1 if value is None else int(value)


class RedisRateLimiter:
    """`RateLimiter` on Redis; an in-process limiter takes over while Redis is away."""

    def __init__(
        self,
        url: str,
        clock: Clock,
        fallback: RateLimiter,
        *,
        prefix: str = "engine",
        client: Any = None,
        scripts: Scripts | None = None,
        server_clock: bool = True,
    ) -> None:
        """`server_clock=False` runs the windows on `clock` instead of the Redis server's
        (tests with a fake clock; replicas on several hosts need the server's)."""
        self._redis: aioredis.Redis = client if client is not None else connect(url)
        self._clock = clock
        self._fallback = fallback
        self._prefix = prefix
        self._scripts = scripts or scripts_for(url, self._redis, given=client is not None)
        self._acquire = self._scripts.register(ACQUIRE)
        self._close = self._scripts.register(CLOSE)
        self._observe = self._scripts.register(OBSERVE)
        self._status = self._scripts.register(STATUS)
        self._queues: dict[str, asyncio.Lock] = {}
        self._names = KeyNames(self._key_names)  # (provider, *key ids) -> their keys
        self._naps: dict[str, WaitQueue] = {}
        self._open: set[int] = set()
        self._in_flight: Counter[str] = Counter()  # this replica's open leases per provider
        self._ids = itertools.count(1)
        self._keys: dict[str, tuple[KeyPlan, ...]] = {}
        self._pending: set[asyncio.Future[Any]] = set()  # scripts on their way
        self._ahead = Ahead(clock, self._send_closes)  # grants, corrections not yet sent
        self._observe_due = ObserveThrottle()
        self.fallbacks = 0  # calls served by the local share because Redis was unreachable
        self._server_clock = server_clock

    def __repr__(self) -> str:  # never the URL: it may carry a password
        return f"RedisRateLimiter(prefix={self._prefix!r})"

    def _now(self) -> int:
        """The scripts' last argument: -1 (use the server's TIME) or the clock's ms."""
        return -1 if self._server_clock else int(self._clock.time() * 1000)

    def _redis_keys(self, provider: str, keys: Sequence[KeyPlan]) -> tuple[str, ...]:
        """The state and history names of each key of the pool."""
        return self._names((provider, *(k.id for k in keys)))

    def _key_names(self, pool: tuple[str, ...]) -> tuple[str, ...]:
        provider, *key_ids = pool
        base = f"{self._prefix}:rl:{tag(provider)}"
        return tuple(f"{base}:{part}:{key_id}" for key_id in key_ids for part in (STATE, HISTORY))

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
        """A lease from this replica's room booked ahead on the pool, when it has some and
        no call is queued before this one; None sends the call to `acquire`."""
        queue = self._queues.get(provider)
        if queue is not None and queue.locked():
            return None
        return self._from_grant(provider, keys, (max(input_tokens, 0), max(output_tokens, 0)))

    async def acquire(
        self,
        provider: str,
        keys: Sequence[KeyPlan],
        input_tokens: int,
        output_tokens: int,
        max_wait_s: float,
    ) -> Lease:
        """Book on the key with most headroom; queue (FIFO, this replica) up to max_wait_s."""
        pool = self._pool(provider, keys)
        need = (max(input_tokens, 0), max(output_tokens, 0))
        deadline = self._clock.monotonic() + max(max_wait_s, 0.0)
        queue = self._queues.get(provider) or self._queues.setdefault(provider, asyncio.Lock())
        if not queue.locked():
            lease, wait_s = await self._try(provider, pool, need)
            if lease is not None:
                return lease
            if max_wait_s <= 0:
                raise self._limited(provider, wait_s, 0.0)
        async with queue:
            return await self._wait(provider, pool, need, deadline, max_wait_s)

    async def _wait(
        self,
        provider: str,
        pool: tuple[KeyPlan, ...],
        need: tuple[int, int],
        deadline: float,
        max_wait_s: float,
    ) -> Lease:
        while True:
            lease, wait_s = await self._try(provider, pool, need)
            if lease is not None:
                return lease
            left = deadline - self._clock.monotonic()
            # Waiting past the deadline helps only if a lease of ours may come back sooner.
            hopeless = wait_s > left and not self._in_flight[provider]
            if left <= 0 or hopeless:
                raise self._limited(provider, wait_s, max_wait_s)
            await self._naps.setdefault(provider, WaitQueue()).nap(
                self._clock, max(min(wait_s, left), 0.001)
            )  # a nap on the clock, cut short by a local settle, release or new headers

    async def _try(
        self, provider: str, pool: tuple[KeyPlan, ...], need: tuple[int, int]
    ) -> tuple[Lease | None, float]:
        """A lease from this replica's grant on the pool, else one atomic check-and-book in
        Redis: (a lease, 0) or (None, seconds until room may appear)."""
        if (lease := self._from_grant(provider, pool, need)) is not None:
            return lease, 0.0
        if (refill := self._ahead.refill(provider)) is not None:
            await asyncio.shield(refill)  # answered: served from its grant if it has room
            if (lease := self._from_grant(provider, pool, need)) is not None:
                return lease, 0.0
        want = self._ahead.want(provider)
        numbers = [need[0], need[1], want]
        for key in pool:
            numbers += [_limit(key.rpm), _limit(key.input_tpm), _limit(key.output_tpm)]
        numbers += self._ahead.owed.carried(provider, pool)
        args = (packed(*numbers, self._now()),)
        sent = self._clock.monotonic()
        if want > 1:
            self._ahead.refilling(provider, True)  # one booking ahead at a time
        try:
            reply = await self._acquire(keys=self._redis_keys(provider, pool), args=args)
        except (RedisError, OSError) as exc:
            return await self._degraded(provider, pool, need, exc), 0.0
        finally:
            if want > 1:
                self._ahead.refilling(provider, False)
        if int(reply[0]) == 0:  # no room in Redis; a grant that came back meanwhile may have
            return self._from_grant(provider, pool, need), int(reply[1]) / 1000
        index, slot, granted, ms_left = (int(v) for v in reply)
        key = pool[index - 1]
        if granted > 1:
            until = sent + ms_left / 1000
            rest = granted - 1
            self._ahead.keep(
                provider, Grant(key, slot, until, granted, rest, rest * need[0], rest * need[1])
            )
        return self._lease(provider, key, need, slot), 0.0

    def _lease(self, provider: str, key: KeyPlan, need: tuple[int, int], slot: int) -> Lease:
        ident = next(self._ids)
        self._open.add(ident)
        self._in_flight[provider] += 1
        return _SharedLease(provider, key, need[0], need[1], slot, ident)

    def _from_grant(
        self, provider: str, pool: Sequence[KeyPlan], need: tuple[int, int]
    ) -> Lease | None:
        grant = self._ahead.take(provider, pool, need)
        return None if grant is None else self._lease(provider, grant.key, need, grant.slot)

    async def _degraded(
        self, provider: str, pool: tuple[KeyPlan, ...], need: tuple[int, int], exc: BaseException
    ) -> Lease:
        self.fallbacks += 1
        log.warning(
            "Redis rate limiter unreachable (%s); provider %r limited by this replica's share",
            type(exc).__name__, provider,
        )  # fmt: skip
        return await self._fallback.acquire(provider, pool, need[0], need[1], 0.0)

    def _limited(self, provider: str, wait_s: float, allowed: float) -> RateLimitedError:
        return RateLimitedError(
            f"every key of provider {provider!r} is at its rate limit across replicas "
            f"(may wait {allowed:.2f}s; next room in {wait_s:.2f}s)",
            provider=provider,
            retry_after=max(wait_s, 0.0),
            code="client_rate_limit",
        )

    async def settle(self, lease: Lease, input_tokens: int, output_tokens: int) -> None:
        """Correct the booked slice with the real usage (once)."""
        if not isinstance(lease, _SharedLease):
            await self._fallback.settle(lease, input_tokens, output_tokens)
            return
        await self._finish(lease, 0, max(input_tokens, 0), max(output_tokens, 0))

    async def release(self, lease: Lease) -> None:
        """Take the request back from the window: it was never sent."""
        if not isinstance(lease, _SharedLease):
            await self._fallback.release(lease)
            return
        await self._finish(lease, -1, 0, 0)

    async def _finish(self, lease: _SharedLease, requests: int, inp: int, out: int) -> None:
        """Close the lease locally now (and wake a waiter); its correction reaches Redis
        with this replica's next booking on the key, or on its own within CLOSE_DELAY_S.
        Riding on the booking (summed with the others of its key and second) saves the
        server a script per call (docs/state.md); until it lands, the window shows the
        lease's estimate and other replicas count that instead of the real usage, which
        the delay bounds."""
        if lease.ident not in self._open:
            return
        self._open.discard(lease.ident)
        self._in_flight[lease.provider] -= 1
        inp, out = inp - lease.input_tokens, out - lease.output_tokens
        self._ahead.owe(lease.provider, lease.key.id, lease.slot, requests, inp, out, 1)
        self._wake(lease.provider)

    def _send_closes(self, closes: list[Closing]) -> None:
        for provider, key_id, numbers in closes:
            keys = self._redis_keys(provider, (KeyPlan(id=key_id, secret=None),))
            args = (packed(*numbers, self._now()),)
            self._background(self._close, keys, args, "settle leases")

    def _wake(self, provider: str) -> None:
        nap = self._naps.get(provider)
        if nap is not None:
            nap.notify()

    def _background(
        self, script: Script, keys: Sequence[Arg], args: Sequence[Arg], what: str
    ) -> None:
        """Send now, never wait: on the pipelined connection the script is written at once
        as a reply nobody awaits (so it does not hold back the next awaited command) and
        later commands of this process run after it; elsewhere it runs as a task."""
        sent = script.written(keys, args)
        if sent is None:
            sent = asyncio.ensure_future(script(keys=keys, args=args))
        self._pending.add(sent)
        sent.add_done_callback(functools.partial(self._landed, what))

    def _landed(self, what: str, sent: asyncio.Future[Any]) -> None:
        self._pending.discard(sent)
        exc = None if sent.cancelled() else sent.exception()
        if isinstance(exc, (RedisError, OSError)):
            log.warning("Redis rate limiter could not %s (%s)", what, type(exc).__name__)
        elif exc is not None:
            log.error("Redis rate limiter could not %s", what, exc_info=exc)

    async def observe(self, provider: str, key_id: str, info: RateLimitInfo) -> None:
        """Store what the headers said (limits, remaining until reset, Retry-After) for all
        replicas, in the background. A Retry-After or a new limit goes at once; the mere
        `remaining` countdown of a busy key at most every OBSERVE_EVERY_S (the script's own
        booking counts it down meanwhile), which saves a round trip on most calls."""
        now = self._clock.monotonic()
        if not self._observe_due.due(provider, key_id, info, now):
            return
        key = KeyPlan(id=key_id, secret=None)
        args = (packed(
            _limit(info.limit_requests), _limit(info.remaining_requests),
            _limit(info.limit_input_tokens), _limit(info.remaining_input_tokens),
            _limit(info.limit_output_tokens), _limit(info.remaining_output_tokens),
            _limit(info.limit_tokens), _limit(info.remaining_tokens),
            int((info.reset_requests_s or 60.0) * 1000), int((info.reset_tokens_s or 60.0) * 1000),
            int(min(info.retry_after_s or 0.0, MAX_BLOCK_S) * 1000),  # capped, as in-process
            self._now(),
        ),)  # fmt: skip
        self._background(self._observe, self._redis_keys(provider, (key,)), args, "store headers")
        if info.retry_after_s:
            self._ahead.retire(provider, key_id)  # pushed back: no more calls from its grant
        await self._fallback.observe(provider, key_id, info)  # ready if Redis goes away
        self._wake(provider)

    async def status(self, provider: str) -> dict[str, Any]:
        """Per key id: limit, remaining and used per dimension across all replicas."""
        pool = self._keys.get(provider, ())
        queue = self._queues.get(provider)
        out: dict[str, Any] = {"provider": provider, "queued": int(bool(queue and queue.locked()))}
        out["shared"] = "redis"
        out["fallbacks"] = self.fallbacks
        keys: dict[str, Any] = {}
        for key in pool:
            try:
                rows = await self._status(
                    keys=self._redis_keys(provider, (key,)),
                    args=(
                        packed(
                            _limit(key.rpm),
                            _limit(key.input_tpm),
                            _limit(key.output_tpm),
                            self._now(),
                        ),
                    ),
                )
            except (RedisError, OSError):
                keys[key.id] = {"error": "Redis unreachable"}
                continue
            keys[key.id] = _key_status(rows)
        out["keys"] = keys
        return out

    async def flush(self) -> None:
        """Give back the grants' unused room, send the pending corrections and wait for
        every script on its way to Redis."""
        self._ahead.give_back()
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def aclose(self) -> None:
        await self.flush()
        await self._scripts.aclose()
        await self._redis.aclose()
        await self._fallback.aclose()


def _key_status(rows: list[Any]) -> dict[str, Any]:
    """The STATUS script's flat list as the in-process limiter's status shape."""
    out: dict[str, Any] = {}
    for dim, name in enumerate(_DIMENSIONS):
        limit, remaining, used = (int(v) for v in rows[dim * 3 : dim * 3 + 3])
        out[name] = {
            "limit": None if limit < 0 else limit,
            "remaining": None if remaining < 0 else remaining,
            "used": used,
        }
    out["in_flight"] = int(rows[12])
    out["blocked_for_s"] = int(rows[13]) / 1000
    return out

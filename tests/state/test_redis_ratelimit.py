"""RedisRateLimiter against a real redis-server: one window for every replica."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from engine.clock import SystemClock
from engine.errors import RateLimitedError
from engine.messages import RateLimitInfo
from engine.plan.values import KeyPlan
from engine.state import redis_grants
from engine.state.ratelimit import InProcessRateLimiter
from engine.state.redis_ratelimit import RedisRateLimiter
from engine.testing.clock import FakeClock
from engine.testing.servers import RedisServer, free_port


def limiter(url: str, prefix: str) -> RedisRateLimiter:
    clock = SystemClock()
    return RedisRateLimiter(url, clock, InProcessRateLimiter(clock), prefix=prefix)


def on_clock(url: str, prefix: str, clock: FakeClock) -> RedisRateLimiter:
    """A replica whose windows run on `clock` (the scripts are given its time)."""
    fallback = InProcessRateLimiter(clock)
    return RedisRateLimiter(url, clock, fallback, prefix=prefix, server_clock=False)


async def test_three_replicas_share_one_request_limit(redis_srv: RedisServer, prefix: str) -> None:
    """60 concurrent requests through 3 replicas against a 20 rpm key: exactly 20 go."""
    replicas = [limiter(redis_srv.url, prefix) for _ in range(3)]
    keys = (KeyPlan(id="p#0", secret=None, rpm=20),)

    async def one(i: int) -> bool:
        try:
            await replicas[i % 3].acquire("p", keys, 10, 10, max_wait_s=0)
        except RateLimitedError:
            return False
        return True

    try:
        admitted = await asyncio.gather(*(one(i) for i in range(60)))
        assert sum(admitted) == 20
        status = await replicas[1].status("p")
        assert status["keys"]["p#0"]["requests"] == {"limit": 20, "remaining": 0, "used": 20}
    finally:
        for r in replicas:
            await r.aclose()


async def test_settle_books_real_tokens_and_release_gives_back(
    redis_srv: RedisServer, prefix: str
) -> None:
    """Settle corrects the estimate in the window; release takes the request back."""
    a, b = limiter(redis_srv.url, prefix), limiter(redis_srv.url, prefix)
    keys = (KeyPlan(id="p#0", secret=None, input_tpm=1000),)
    try:
        lease = await a.acquire("p", keys, 100, 0, max_wait_s=0)
        await a.settle(lease, 700, 0)
        await a.settle(lease, 700, 0)  # a second settle changes nothing
        await a.flush()  # corrections travel in the background
        with pytest.raises(RateLimitedError):
            await b.acquire("p", keys, 400, 0, max_wait_s=0)
        second = await b.acquire("p", keys, 300, 0, max_wait_s=0)
        await b.release(second)
        await b.flush()
        third = await a.acquire("p", keys, 300, 0, max_wait_s=0)
        assert third.key.id == "p#0"
        status = await a.status("p")
        assert status["keys"]["p#0"]["input_tokens"]["used"] == 1000
    finally:
        await a.aclose()
        await b.aclose()


async def test_retry_after_blocks_the_key_for_every_replica(
    redis_srv: RedisServer, prefix: str
) -> None:
    """A Retry-After seen by one replica sends the others to the pool's other key."""
    a, b = limiter(redis_srv.url, prefix), limiter(redis_srv.url, prefix)
    keys = (KeyPlan(id="p#0", secret=None), KeyPlan(id="p#1", secret=None))
    try:
        await a.observe("p", "p#0", RateLimitInfo(retry_after_s=30))
        await a.observe("p", "p#1", RateLimitInfo(limit_requests=5, remaining_requests=5))
        await a.flush()
        chosen = {(await b.acquire("p", keys, 1, 1, max_wait_s=0)).key.id for _ in range(5)}
        assert chosen == {"p#1"}
        with pytest.raises(RateLimitedError) as err:  # p#1's remaining figure is spent
            await b.acquire("p", keys, 1, 1, max_wait_s=0)
        assert err.value.retry_after is not None and err.value.retry_after > 0
    finally:
        await a.aclose()
        await b.aclose()


async def test_learned_limit_tightens_the_configured_one(
    redis_srv: RedisServer, prefix: str
) -> None:
    """A limit the provider announced below the configured one is the one applied."""
    a = limiter(redis_srv.url, prefix)
    keys = (KeyPlan(id="p#0", secret=None, rpm=100),)
    try:
        await a.observe("p", "p#0", RateLimitInfo(limit_requests=2))
        await a.flush()
        await a.acquire("p", keys, 0, 0, max_wait_s=0)
        await a.acquire("p", keys, 0, 0, max_wait_s=0)
        with pytest.raises(RateLimitedError):
            await a.acquire("p", keys, 0, 0, max_wait_s=0)
    finally:
        await a.aclose()


async def test_a_waiter_is_woken_by_a_release(redis_srv: RedisServer, prefix: str) -> None:
    """A request queued for room gets it as soon as this replica releases a lease."""
    a = limiter(redis_srv.url, prefix)
    keys = (KeyPlan(id="p#0", secret=None, rpm=1),)
    try:
        held = await a.acquire("p", keys, 0, 0, max_wait_s=0)
        waiting = asyncio.create_task(a.acquire("p", keys, 0, 0, max_wait_s=5))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        await a.release(held)
        lease = await asyncio.wait_for(waiting, 2)
        assert lease.key.id == "p#0"
    finally:
        await a.aclose()


async def test_unreachable_redis_falls_back_to_the_local_share() -> None:
    """With Redis down, leases come from the local limiter, counted and reported."""
    clock = SystemClock()
    a = RedisRateLimiter(
        f"redis://127.0.0.1:{free_port()}/0", clock, InProcessRateLimiter(clock), prefix="x"
    )
    keys = (KeyPlan(id="p#0", secret=None, rpm=1),)
    try:
        lease = await a.acquire("p", keys, 0, 0, max_wait_s=0)
        with pytest.raises(RateLimitedError):  # the local share still limits
            await a.acquire("p", keys, 0, 0, max_wait_s=0)
        await a.settle(lease, 0, 0)
        assert a.fallbacks == 2
        assert (await a.status("p"))["fallbacks"] == 2
    finally:
        await a.aclose()


async def test_a_closed_lease_rides_on_the_next_booking(
    redis_srv: RedisServer, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A settle sends no script of its own when a booking on the key follows: the booking
    carries the correction, and every replica sees it."""
    monkeypatch.setattr(redis_grants, "CLOSE_DELAY_S", 3600.0)  # no CLOSE by itself
    a, b = limiter(redis_srv.url, prefix), limiter(redis_srv.url, prefix)
    admin = aioredis.Redis.from_url(redis_srv.url)
    keys = (KeyPlan(id="p#0", secret=None, input_tpm=700),)  # too little room to book ahead
    b.register("p", keys)
    try:
        first = await a.acquire("p", keys, 100, 0, max_wait_s=0)
        await a.settle(first, 40, 0)
        await admin.config_resetstat()
        await a.acquire("p", keys, 100, 0, max_wait_s=0)
        stats = await admin.info("commandstats")
        assert stats["cmdstat_evalsha"]["calls"] == 1  # the booking alone
        status = await b.status("p")
        assert status["keys"]["p#0"]["input_tokens"]["used"] == 140
        assert status["keys"]["p#0"]["in_flight"] == 1
    finally:
        await a.aclose()
        await b.aclose()
        await admin.aclose()


async def test_room_booked_ahead_serves_calls_and_goes_back(
    redis_srv: RedisServer, prefix: str
) -> None:
    """With plenty of room a booking books several requests ahead (doubling with the
    replica's pace): the calls it covers need no script; every replica counts the room
    until it is given back, and exactly what was used stays."""
    clock = FakeClock()
    a, b = on_clock(redis_srv.url, prefix, clock), on_clock(redis_srv.url, prefix, clock)
    admin = aioredis.Redis.from_url(redis_srv.url)
    keys = (KeyPlan(id="p#0", secret=None, rpm=10_000),)
    b.register("p", keys)
    try:
        await admin.config_resetstat()
        leases = [await a.acquire("p", keys, 10, 5, max_wait_s=0) for _ in range(15)]
        stats = await admin.info("commandstats")
        assert stats["cmdstat_evalsha"]["calls"] == 4  # books 2, 4, 8 and 16 requests
        assert {lease.key.id for lease in leases} == {"p#0"}
        ahead = (await b.status("p"))["keys"]["p#0"]
        assert ahead["requests"]["used"] == 15 + 15  # the last booking's unused room counts
        await a.flush()  # gives it back
        used = (await b.status("p"))["keys"]["p#0"]
        assert used["requests"]["used"] == 15
        assert used["input_tokens"]["used"] == 150 and used["output_tokens"]["used"] == 75
        assert used["in_flight"] == 15
    finally:
        await a.aclose()
        await b.aclose()
        await admin.aclose()


async def test_booking_ahead_never_lets_replicas_past_the_limit(
    redis_srv: RedisServer, prefix: str
) -> None:
    """Three replicas taking turns on a 100 rpm key: exactly 100 calls go in the minute,
    whatever each holds ahead (a refused call still takes its replica's room ahead)."""
    clock = FakeClock()
    replicas = [on_clock(redis_srv.url, prefix, clock) for _ in range(3)]
    keys = (KeyPlan(id="p#0", secret=None, rpm=100),)
    admitted, refused_in_a_row, turn = 0, 0, 0
    try:
        while refused_in_a_row < 3:
            try:
                await replicas[turn % 3].acquire("p", keys, 1, 1, max_wait_s=0)
            except RateLimitedError:
                refused_in_a_row += 1
            else:
                admitted, refused_in_a_row = admitted + 1, 0
            turn += 1
            clock.advance(0.001)
        assert admitted == 100
        for r in replicas:
            await r.flush()
        status = await replicas[0].status("p")
        assert status["keys"]["p#0"]["requests"]["used"] == 100
    finally:
        for r in replicas:
            await r.aclose()


async def test_a_closed_lease_reaches_redis_on_its_own(redis_srv: RedisServer, prefix: str) -> None:
    """With no booking to carry it, a settle's correction is sent by itself, soon."""
    a, b = limiter(redis_srv.url, prefix), limiter(redis_srv.url, prefix)
    keys = (KeyPlan(id="p#0", secret=None, input_tpm=100_000),)
    b.register("p", keys)
    try:
        lease = await a.acquire("p", keys, 100, 0, max_wait_s=0)
        await a.settle(lease, 40, 0)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while (await b.status("p"))["keys"]["p#0"]["input_tokens"]["used"] != 40:
            assert loop.time() < deadline, "the correction never reached Redis"
            await asyncio.sleep(0.005)
        assert (await b.status("p"))["keys"]["p#0"]["in_flight"] == 0
    finally:
        await a.aclose()
        await b.aclose()


async def test_room_ahead_serves_only_keys_still_in_the_pool(
    redis_srv: RedisServer, prefix: str
) -> None:
    """Room booked on a key that has since left the pool (rejected, cooling down) is not
    used; the call books on a usable key. Without a wait, a lease comes straight from the
    room ahead (no await), or not at all."""
    a = limiter(redis_srv.url, prefix)
    k0, k1 = KeyPlan(id="p#0", secret=None), KeyPlan(id="p#1", secret=None)
    try:
        assert a.try_acquire_nowait("p", (k0,), 1, 1) is None  # nothing booked ahead yet
        leases = [await a.acquire("p", (k0,), 1, 1, max_wait_s=0) for _ in range(3)]
        nowait = a.try_acquire_nowait("p", (k0,), 1, 1)  # the third booked 4: 2 left
        assert nowait is not None and nowait.key.id == "p#0"
        moved = await a.acquire("p", (k1,), 1, 1, max_wait_s=0)
        assert moved.key.id == "p#1"
        for lease in (*leases, nowait, moved):
            await a.settle(lease, 1, 1)
    finally:
        await a.aclose()

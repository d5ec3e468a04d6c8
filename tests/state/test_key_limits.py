"""Per-client-key limits (engine/state/key_limits.py, redis_key_limits.py) driven directly.

Both limiters keep the tokens in the window as a running sum (adding the window up on
every request cost O(requests per minute)). What is pinned: tpm books the estimate and
then the real usage, tokens leave with their requests, the Redis sum always equals its
entries through random traffic, and data written before the sum existed is added up once.
Time passing is the FakeClock in-process and, in Redis, entries moved back in the window.
"""

from __future__ import annotations

import contextlib
import random

import pytest
import redis.asyncio as aioredis

from engine.state.key_limits import (
    WINDOW_S,
    InProcessKeyLimiter,
    KeyLimitedError,
    KeyLimits,
    Ticket,
)
from engine.state.redis_common import tag
from engine.state.redis_key_limits import RedisKeyLimiter
from engine.testing.clock import FakeClock
from engine.testing.servers import RedisServer

TPM = KeyLimits(tpm=60)


async def _books_estimate_then_usage(limiter: InProcessKeyLimiter | RedisKeyLimiter) -> None:
    first = await limiter.admit("k", TPM, 49)
    await limiter.done(first, 5)  # the window holds 5
    second = await limiter.admit("k", TPM, 49)  # 54
    with pytest.raises(KeyLimitedError) as refused:
        await limiter.admit("k", TPM, 49)  # 103 > 60
    assert refused.value.limit == "tpm"
    await limiter.done(second, 5)  # 10
    await limiter.admit("k", TPM, 49)  # 59


async def test_in_process_tpm_books_the_estimate_then_the_real_usage(clock: FakeClock) -> None:
    await _books_estimate_then_usage(InProcessKeyLimiter(clock))


async def test_in_process_tokens_leave_with_their_requests(clock: FakeClock) -> None:
    limiter = InProcessKeyLimiter(clock)
    ticket = await limiter.admit("k", TPM, 50)
    await limiter.done(ticket, 50)
    with pytest.raises(KeyLimitedError):
        await limiter.admit("k", TPM, 20)
    clock.advance(WINDOW_S)
    await limiter.admit("k", TPM, 50)  # the first request left the window with its tokens
    with pytest.raises(KeyLimitedError):
        await limiter.admit("k", TPM, 20)


async def test_redis_tpm_books_the_estimate_then_the_real_usage(
    redis_srv: RedisServer, prefix: str
) -> None:
    limiter = RedisKeyLimiter(redis_srv.url, prefix=prefix)
    try:
        await _books_estimate_then_usage(limiter)
    finally:
        await limiter.aclose()


def _keys(prefix: str, key_id: str) -> tuple[str, str]:
    base = f"{prefix}:keylimit:{tag(key_id)}"
    return f"{base}:req", f"{base}:tok"


async def _age(admin: aioredis.Redis, prefix: str, token: str, seconds: float) -> None:
    """Move one request `seconds` back in its window (what time passing does)."""
    req, _ = _keys(prefix, "k")
    score = await admin.zscore(req, token)
    assert score is not None
    await admin.zadd(req, {token: score - seconds * 1000})


async def _sum_and_entries(admin: aioredis.Redis, prefix: str) -> tuple[int, int]:
    _, tok = _keys(prefix, "k")
    fields = await admin.hgetall(tok)
    entries = sum(int(v) for k, v in fields.items() if k != b"_sum")
    return int(fields.get(b"_sum", 0)), entries


async def test_redis_sum_equals_its_entries_through_random_traffic(
    redis_srv: RedisServer, prefix: str
) -> None:
    """Admits (some refused), dones with other real usage, requests leaving the window:
    after every step the running sum is what adding the entries up gives."""
    limiter = RedisKeyLimiter(redis_srv.url, prefix=prefix)
    admin = aioredis.Redis.from_url(redis_srv.url)
    rng = random.Random(7)
    open_tickets: list[Ticket] = []
    limits = KeyLimits(tpm=400)
    try:
        for _ in range(150):
            move = rng.random()
            if move < 0.5:
                with contextlib.suppress(KeyLimitedError):
                    open_tickets.append(await limiter.admit("k", limits, rng.randint(0, 60)))
            elif move < 0.8 and open_tickets:
                ticket = open_tickets.pop(rng.randrange(len(open_tickets)))
                await limiter.done(ticket, rng.randint(0, 80))
            elif open_tickets:
                ticket = rng.choice(open_tickets)
                await _age(admin, prefix, ticket.token, WINDOW_S + 1)
            total, entries = await _sum_and_entries(admin, prefix)
            assert total == entries
    finally:
        await limiter.aclose()
        await admin.aclose()


async def test_redis_tokens_leave_with_their_requests(redis_srv: RedisServer, prefix: str) -> None:
    limiter = RedisKeyLimiter(redis_srv.url, prefix=prefix)
    admin = aioredis.Redis.from_url(redis_srv.url)
    try:
        ticket = await limiter.admit("k", TPM, 50)
        await limiter.done(ticket, 50)
        with pytest.raises(KeyLimitedError):
            await limiter.admit("k", TPM, 20)
        await _age(admin, prefix, ticket.token, WINDOW_S + 1)
        await limiter.admit("k", TPM, 50)
        assert await _sum_and_entries(admin, prefix) == (50, 50)
    finally:
        await limiter.aclose()
        await admin.aclose()


async def test_redis_window_written_without_a_sum_is_added_up_once(
    redis_srv: RedisServer, prefix: str
) -> None:
    """Entries from before the running sum existed (no `_sum` field) still count."""
    limiter = RedisKeyLimiter(redis_srv.url, prefix=prefix)
    admin = aioredis.Redis.from_url(redis_srv.url)
    try:
        ticket = await limiter.admit("k", TPM, 50)
        await limiter.done(ticket, 50)
        await admin.hdel(_keys(prefix, "k")[1], "_sum")
        with pytest.raises(KeyLimitedError):
            await limiter.admit("k", TPM, 20)  # 50 + 20 > 60, found by adding the window up
        assert await _sum_and_entries(admin, prefix) == (50, 50)
    finally:
        await limiter.aclose()
        await admin.aclose()

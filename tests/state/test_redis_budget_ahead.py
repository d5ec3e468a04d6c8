"""Budget room booked ahead (engine/state/redis_budget_ahead.py) against a real redis-server:
calls lend from a block with no round trip, money stays within every limit across replicas,
a block goes back when its lending ends or its replica dies, near a limit every call is held
exactly. `plain` is a RedisBudgetStore on the same keys: what another process reads."""

from __future__ import annotations

import asyncio
import random

import pytest
import redis.asyncio as aioredis

from engine.errors import BudgetExceededError
from engine.state.redis_budget import RedisBudgetStore
from engine.state.redis_budget_ahead import AHEAD, BookedAheadBudget
from engine.testing.servers import RedisServer


async def _scripts_run(redis_srv: RedisServer) -> int:
    admin = aioredis.Redis.from_url(redis_srv.url)
    try:
        stats = await admin.info("commandstats")
        return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))
    finally:
        await admin.aclose()


def _ahead(redis_srv: RedisServer, prefix: str, **kwargs: float) -> BookedAheadBudget:
    hold_s = kwargs.pop("hold_s", 600.0)
    store = RedisBudgetStore(redis_srv.url, prefix=prefix, hold_s=hold_s)
    return BookedAheadBudget(store, **kwargs)


async def test_calls_lend_from_one_block_and_book_only_their_cost(
    redis_srv: RedisServer, prefix: str
) -> None:
    """100 calls far from the limit: one script each (the cost's booking) plus a block now
    and then, where a hold per call took two; every cost is booked, the unused block goes
    back on close, and another process's reading never counts less than was spent."""
    ahead = _ahead(redis_srv, prefix)
    plain = RedisBudgetStore(redis_srv.url, prefix=prefix)
    costs = []
    try:
        await ahead.settle(await ahead.reserve("ws", 0.01, 100.0, None), 0.001)  # connected
        before = await _scripts_run(redis_srv)
        for _ in range(100):
            held = await ahead.reserve("ws", 0.01, daily_usd=100.0, monthly_usd=None)
            costs.append(random.uniform(0.0, 0.01))
            await ahead.settle(held, costs[-1])
        assert await _scripts_run(redis_srv) - before <= 100 + 10  # a hold per call: 200
        seen = await plain.spent("ws")
        assert 0.001 + sum(costs) - 1e-9 <= seen["day"] <= 0.001 + sum(costs) + 25.0
        assert (await ahead.spent("ws"))["day"] == pytest.approx(0.001 + sum(costs))
        await ahead.aclose()
        assert (await plain.spent("ws"))["day"] == pytest.approx(0.001 + sum(costs))
    finally:
        await ahead.aclose()
        await plain.aclose()


async def test_replicas_booking_ahead_never_overspend(redis_srv: RedisServer, prefix: str) -> None:
    """Three replicas, 450 calls of a $0.02 worst case against $2.00 a day, 30 at a time:
    blocks while the room is wide, exact holds near the limit; what is booked plus what is
    lent never passes the limit, and once every replica closes the day shows exactly what
    was settled. (Another process reads more while blocks are out: a block counts whole
    until given back, beside the costs its calls booked.)"""
    replicas = [_ahead(redis_srv, prefix) for _ in range(3)]
    plain = RedisBudgetStore(redis_srv.url, prefix=prefix)
    settled: list[float] = []
    refused = 0

    async def one(store: BookedAheadBudget) -> None:
        nonlocal refused
        try:
            held = await store.reserve("ws", 0.02, daily_usd=2.0, monthly_usd=None)
        except BudgetExceededError:
            refused += 1
            return
        await asyncio.sleep(random.random() * 0.002)
        if random.random() < 0.1:
            await store.release(held)
        else:
            settled.append(random.uniform(0.005, 0.02))
            await store.settle(held, settled[-1])
        seen = await replicas[0].spent("ws")  # the blocks of this process as their calls
        assert seen["day"] <= 2.0 + 1e-9

    try:
        calls = [one(replicas[i % 3]) for i in range(450)]
        for start in range(0, len(calls), 30):
            await asyncio.gather(*calls[start : start + 30])
        assert refused > 0 and sum(settled) <= 2.0 + 1e-9
        for store in replicas:
            await store.aclose()
        assert (await plain.spent("ws"))["day"] == pytest.approx(sum(settled), abs=1e-6)
    finally:
        for store in replicas:
            await store.aclose()
        await plain.aclose()


async def test_a_block_goes_back_when_its_lending_ends(redis_srv: RedisServer, prefix: str) -> None:
    """A block lends for `lend_s`; once its calls are closed it is given back, so other
    replicas see only the costs booked."""
    ahead = _ahead(redis_srv, prefix, lend_s=0.1)
    plain = RedisBudgetStore(redis_srv.url, prefix=prefix)
    try:
        held = await ahead.reserve("ws", 0.01, daily_usd=10.0, monthly_usd=None)
        assert (await plain.spent("ws"))["day"] > 0.01  # the block, more than this call
        await asyncio.sleep(0.2)  # lending over; its one call still open: kept
        assert (await plain.spent("ws"))["day"] > 0.01
        await ahead.settle(held, 0.004)
        assert (await plain.spent("ws"))["day"] == pytest.approx(0.004)
    finally:
        await ahead.aclose()
        await plain.aclose()


async def test_a_dead_replicas_block_expires(redis_srv: RedisServer, prefix: str) -> None:
    """A replica killed holding a block (never closed) holds it for a call's hold time
    plus the lending time, then the room is everyone's again."""
    dead = _ahead(redis_srv, prefix, hold_s=0.2, lend_s=0.1)
    plain = RedisBudgetStore(redis_srv.url, prefix=prefix)
    try:
        await dead.reserve("ws", 0.01, daily_usd=1.0, monthly_usd=None)  # a block of 0.16
        with pytest.raises(BudgetExceededError):
            await plain.reserve("ws", 0.9, daily_usd=1.0, monthly_usd=None)
        await asyncio.sleep(0.4)
        dead._blocks.clear()  # the process is gone: nothing of it gives anything back
        await plain.reserve("ws", 0.9, daily_usd=1.0, monthly_usd=None)
    finally:
        await dead.aclose()
        await plain.aclose()


async def test_near_the_limit_each_call_is_held_exactly(
    redis_srv: RedisServer, prefix: str
) -> None:
    """With less than AHEAD worst cases left, a call holds exactly its worst case (what
    another replica reads is the open calls' worst cases) and goes back when it closes."""
    ahead = _ahead(redis_srv, prefix)
    plain = RedisBudgetStore(redis_srv.url, prefix=prefix)
    worst = 1.0 / (AHEAD - 1)
    try:
        first = await ahead.reserve("ws", worst, daily_usd=1.0, monthly_usd=None)
        second = await ahead.reserve("ws", worst, daily_usd=1.0, monthly_usd=None)
        assert (await plain.spent("ws"))["day"] == pytest.approx(2 * worst)
        await ahead.settle(first, worst / 2)
        await ahead.release(second)
        assert (await plain.spent("ws"))["day"] == pytest.approx(worst / 2)
        await ahead.settle(first, worst)  # a second close of the same call books nothing
        assert (await plain.spent("ws"))["day"] == pytest.approx(worst / 2)
    finally:
        await ahead.aclose()
        await plain.aclose()


async def test_a_refusal_for_a_larger_call_does_not_refuse_a_smaller_one(
    redis_srv: RedisServer, prefix: str
) -> None:
    """Calls waiting on a block asked for by a larger call ask again for themselves when
    that call is refused."""
    ahead = _ahead(redis_srv, prefix)
    try:
        large = ahead.reserve("ws", 0.9, daily_usd=0.5, monthly_usd=None)
        small = ahead.reserve("ws", 0.01, daily_usd=0.5, monthly_usd=None)
        got = await asyncio.gather(large, small, return_exceptions=True)
        assert isinstance(got[0], BudgetExceededError)
        assert not isinstance(got[1], BaseException) and got[1].amount_usd == 0.01
    finally:
        await ahead.aclose()

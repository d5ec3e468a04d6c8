"""A server turn's bookings merged per workspace (engine/state/redis_bookings.py), against a
real redis-server: one BOOK per workspace instead of one per call, every nano-dollar booked,
and a block given back only after the costs it covered."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import pytest
import redis.asyncio as aioredis

from engine.state import before_answer
from engine.state.redis_budget import RedisBudgetStore
from engine.state.redis_budget_ahead import BookedAheadBudget
from engine.state.redis_budget_lua import BOOK, CLOSE
from engine.testing.servers import RedisServer

from .test_redis_budget_ahead import _scripts_run


@pytest.fixture
def armed(monkeypatch: pytest.MonkeyPatch) -> None:
    """As under `engine serve`: answers leave only after `before_answer.flush`."""
    monkeypatch.setattr(before_answer, "_armed", True)


@pytest.mark.usefixtures("armed")
async def test_a_turns_bookings_are_one_script_per_workspace(
    redis_srv: RedisServer, prefix: str
) -> None:
    """20 calls of two workspaces settled in one turn: two BOOKs, and every cost counted
    (each workspace's calls lend from one block, none of them given back in the turn)."""
    ahead = BookedAheadBudget(RedisBudgetStore(redis_srv.url, prefix=prefix))
    plain = RedisBudgetStore(redis_srv.url, prefix=prefix)
    try:
        held = [await ahead.reserve(ws, 0.01, 100.0, None) for ws in ["a"] * 10 + ["b"] * 10]
        before_answer.flush()
        await asyncio.sleep(0.05)  # the blocks' grants are answered
        before = await _scripts_run(redis_srv)
        costs = [0.001 * (i + 1) for i in range(20)]
        await asyncio.gather(*(ahead.settle(h, c) for h, c in zip(held, costs, strict=True)))
        before_answer.flush()  # an answer is about to leave
        await asyncio.sleep(0.05)
        assert await _scripts_run(redis_srv) - before == 2
        assert (await ahead.spent("a"))["day"] == pytest.approx(sum(costs[:10]), abs=1e-9)
        assert (await ahead.spent("b"))["day"] == pytest.approx(sum(costs[10:]), abs=1e-9)
        await ahead.aclose()  # the blocks go back: another process reads the costs alone
        assert (await plain.spent("a"))["day"] == pytest.approx(sum(costs[:10]), abs=1e-9)
        assert (await plain.spent("b"))["day"] == pytest.approx(sum(costs[10:]), abs=1e-9)
    finally:
        await ahead.aclose()
        await plain.aclose()


@pytest.mark.usefixtures("armed")
async def test_bookings_reach_redis_at_the_turns_end_without_an_answer(
    redis_srv: RedisServer, prefix: str
) -> None:
    """Nothing written by a server in that turn: the merged booking still leaves."""
    store = RedisBudgetStore(redis_srv.url, prefix=prefix)
    try:
        await store.spent("ws")  # connected
        store.book("ws", 0.5)
        store.book("ws", 0.25)
        for _ in range(20):  # no flush by anyone: the turn's end sends it
            await asyncio.sleep(0.01)
        admin = aioredis.Redis.from_url(redis_srv.url)
        try:
            spend = await admin.hgetall(f"{prefix}:budget:{{ws}}:spend")
        finally:
            await admin.aclose()
        assert sorted(int(v) for v in spend.values()) == [750_000_000] * 2  # day and month
    finally:
        await store.aclose()


@pytest.mark.usefixtures("armed")
async def test_a_block_goes_back_after_the_costs_it_covered(
    redis_srv: RedisServer, prefix: str
) -> None:
    """The give-back's script is written after the merged booking, in the same write or a
    later one: Redis never sees the room without the cost spent from it."""
    store = RedisBudgetStore(redis_srv.url, prefix=prefix)
    try:
        block = await store.reserve("ws", 1.0, 100.0, None)
        wire: Any = store._scripts._wire  # type: ignore[attr-defined]  # the pipelined connection
        written: list[bytes] = []
        write = wire.transport.write

        def recording(data: bytes) -> None:
            written.append(bytes(data))
            write(data)

        wire.transport.write = recording
        store.book("ws", 0.25)
        store.give_back(block)
        sent = b"".join(written)
        book = hashlib.sha1(BOOK.encode()).hexdigest().encode()
        close = hashlib.sha1(CLOSE.encode()).hexdigest().encode()
        assert book in sent and close in sent
        assert sent.index(book) < sent.index(close)
        assert await store.spent("ws") == {"day": 0.25, "month": 0.25}
    finally:
        await store.aclose()

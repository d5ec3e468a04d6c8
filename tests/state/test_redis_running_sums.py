"""The running sums behind the Redis scripts' O(1) cost: the rate-limit window's per-dimension
sums and the budget's held total always equal what summing every slice or every open hold
gives (the scripts used to do that sum on every call), through random traffic, idle gaps,
expiries and (for the rate limit) data written before the sums existed."""

from __future__ import annotations

import contextlib
import random
import struct

import redis.asyncio as aioredis

from engine.errors import RateLimitedError
from engine.plan.values import KeyPlan
from engine.state.ratelimit import InProcessRateLimiter
from engine.state.redis_budget import RedisBudgetStore
from engine.state.redis_common import tag
from engine.state.redis_limits_lua import HISTORY, STATE
from engine.state.redis_ratelimit import RedisRateLimiter
from engine.testing.clock import FakeClock
from engine.testing.servers import RedisServer


def _in_window(state: bytes | None, history: dict[bytes, bytes], sec: int) -> list[int]:
    """Each dimension's usage summed from the slices (the current one in the state, the
    older ones in the history), as the scripts once did on every call."""
    used = [0, 0, 0, 0]
    slices = [(int(name), struct.unpack("<4d", value)) for name, value in history.items()]
    if state is not None:
        packed = struct.unpack("<24d", state)
        slices.append((int(packed[0]), packed[1:5]))
    for second, amounts in slices:
        if second >= sec - 60:
            used = [u + int(a) for u, a in zip(used, amounts, strict=True)]
    return used


async def test_window_sums_equal_the_slices_through_random_traffic(
    redis_srv: RedisServer, prefix: str
) -> None:
    clock = FakeClock()
    rl = RedisRateLimiter(
        redis_srv.url, clock, InProcessRateLimiter(clock), prefix=prefix, server_clock=False
    )
    admin = aioredis.Redis.from_url(redis_srv.url)
    keys = (KeyPlan(id="k#0", secret=None, rpm=40, input_tpm=5000),)
    state = f"{prefix}:rl:{tag('p')}:{STATE}:k#0"
    history = f"{prefix}:rl:{tag('p')}:{HISTORY}:k#0"
    rnd = random.Random(7)
    leases = []
    try:
        for step in range(400):
            roll = rnd.random()
            if step in (150, 300):  # the state lost (evicted): the history counts once
                await admin.delete(state)
            elif roll < 0.5:
                with contextlib.suppress(RateLimitedError):
                    leases.append(await rl.acquire("p", keys, rnd.randint(0, 300), 10, 0))
            elif roll < 0.75 and leases:
                lease = leases.pop(rnd.randrange(len(leases)))
                if rnd.random() < 0.5:
                    await rl.settle(lease, rnd.randint(0, 400), rnd.randint(0, 30))
                else:
                    await rl.release(lease)
                await rl.flush()
            else:
                clock.advance(rnd.choice([0.3, 1.0, 7.0, 30.0, 61.0, 150.0]))
            status = (await rl.status("p"))["keys"]["k#0"]
            used = _in_window(
                await admin.get(state), await admin.hgetall(history), int(clock.time())
            )
            dims = ("requests", "input_tokens", "output_tokens", "tokens")
            assert [status[d]["used"] for d in dims] == used
    finally:
        await rl.aclose()
        await admin.aclose()


async def test_held_sum_equals_the_open_holds(redis_srv: RedisServer, prefix: str) -> None:
    """The held hash's `sum` is the sum of the amounts of the open set's members
    ('sequence:nanos'), through reserves, settles and holds that expire and are swept."""
    store = RedisBudgetStore(redis_srv.url, prefix=prefix)
    brief = RedisBudgetStore(redis_srv.url, prefix=prefix, hold_s=0.001)  # holds that expire
    admin = aioredis.Redis.from_url(redis_srv.url)
    base = f"{prefix}:budget:{tag('ws')}"
    rnd = random.Random(3)
    open_ = []
    try:
        for _ in range(300):
            roll = rnd.random()
            maker = brief if roll < 0.1 else store  # dropped by a later script once expired
            if roll < 0.55:
                open_.append(await maker.reserve("ws", rnd.random() / 100, 1e6, None))
            elif open_:
                held = open_.pop(rnd.randrange(len(open_)))
                await store.settle(held, rnd.random() / 100)
            await store.spent("ws")
            members = await admin.zrange(f"{base}:open", 0, -1)
            open_sum = sum(int(m.split(b":")[1]) for m in members)
            assert int(await admin.hget(f"{base}:held", "sum") or 0) == open_sum
        assert open_sum > 0  # some holds were still open at the end
    finally:
        await store.aclose()
        await brief.aclose()
        await admin.aclose()

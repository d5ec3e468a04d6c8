"""SQLiteRateLimiter: several limiters on one file behave as one window (as workers do)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engine.errors import RateLimitedError
from engine.messages import RateLimitInfo
from engine.plan.values import KeyPlan
from engine.state.ratelimit import InProcessRateLimiter
from engine.state.sqlite_ratelimit import SQLiteRateLimiter
from engine.testing.clock import FakeClock


def workers(path: Path, clock: FakeClock, n: int = 3) -> list[SQLiteRateLimiter]:
    """`n` limiters on one file, each with its own connection and thread, as workers have."""
    file = path / "limits.sqlite3"
    return [SQLiteRateLimiter(file, clock, InProcessRateLimiter(clock, 1 / n)) for _ in range(n)]


async def close(limiters: list[SQLiteRateLimiter]) -> None:
    for rl in limiters:
        await rl.aclose()


async def test_three_workers_share_one_request_limit(tmp_path: Path, clock: FakeClock) -> None:
    """60 concurrent requests through 3 workers against a 20 rpm key: exactly 20 go, and
    all 20 may go through one worker (no fixed third)."""
    rls = workers(tmp_path, clock)
    keys = (KeyPlan(id="p#0", secret=None, rpm=20),)

    async def one(rl: SQLiteRateLimiter) -> bool:
        try:
            await rl.acquire("p", keys, 10, 10, max_wait_s=0)
        except RateLimitedError:
            return False
        return True

    alone = await asyncio.gather(*(one(rls[0]) for _ in range(30)))  # one worker gets all
    assert sum(alone) == 20
    assert not any(await asyncio.gather(*(one(rls[i % 3]) for i in range(30))))
    clock.advance(60.1)
    spread = await asyncio.gather(*(one(rls[i % 3]) for i in range(60)))
    assert sum(spread) == 20
    status = await rls[2].status("p")
    assert status["shared"] == "sqlite"
    assert status["keys"]["p#0"]["requests"] == {"limit": 20, "remaining": 0, "used": 20}
    await close(rls)


async def test_the_pool_is_checked_and_booked_across_workers(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Two keys of 2 rpm each: four leases from two workers spread over both keys, a fifth
    is refused with the time until the window frees a slot."""
    a, b = workers(tmp_path, clock, 2)
    keys = (KeyPlan(id="p#a", secret=None, rpm=2), KeyPlan(id="p#b", secret=None, rpm=2))
    leases = [await rl.acquire("p", keys, 1, 1, 0) for rl in (a, b, a, b)]
    assert sorted(lease.key.id for lease in leases) == ["p#a", "p#a", "p#b", "p#b"]
    with pytest.raises(RateLimitedError) as refused:
        await b.acquire("p", keys, 1, 1, 0)
    assert refused.value.retry_after == pytest.approx(60, abs=0.2)
    await close([a, b])


async def test_headers_learned_by_one_worker_hold_for_the_others(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A Retry-After and a learned limit seen by one worker block and limit another."""
    a, b = workers(tmp_path, clock, 2)
    keys = (KeyPlan(id="p#0", secret=None),)
    await a.observe("p", "p#0", RateLimitInfo(retry_after_s=5))
    with pytest.raises(RateLimitedError):
        await b.acquire("p", keys, 1, 1, 0)
    assert (await b.status("p"))["keys"]["p#0"]["blocked_for_s"] == pytest.approx(5)
    clock.advance(5.01)
    await a.observe("p", "p#0", RateLimitInfo(limit_requests=1))
    await b.settle(await b.acquire("p", keys, 1, 1, 0), 1, 1)
    with pytest.raises(RateLimitedError):
        await a.acquire("p", keys, 1, 1, 0)
    await close([a, b])


async def test_a_waiter_is_served_when_another_workers_release_makes_room(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A worker waiting on a full window gets the slot another worker gives back."""
    a, b = workers(tmp_path, clock, 2)
    keys = (KeyPlan(id="p#0", secret=None, rpm=1),)
    held = await a.acquire("p", keys, 1, 1, 0)
    waiter = asyncio.ensure_future(b.acquire("p", keys, 1, 1, max_wait_s=30))
    while not clock.slept:  # until the waiter has found no room and naps
        await asyncio.sleep(0)
    await a.release(held)
    lease = await waiter
    assert lease.key.id == "p#0"
    assert clock.time() < 1_700_000_000.0 + 60  # before the window would have freed it
    await close([a, b])


async def test_an_unusable_file_falls_back_to_the_workers_share(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """When the file fails, a worker limits by its own share (a third) and says so."""
    (rl,) = workers(tmp_path, clock, 1)
    rl._fallback = InProcessRateLimiter(clock, 1 / 3)
    rl._file.break_for_tests()  # every statement now raises sqlite3.ProgrammingError
    keys = (KeyPlan(id="p#0", secret=None, rpm=6),)
    for _ in range(2):
        await rl.acquire("p", keys, 1, 1, 0)
    with pytest.raises(RateLimitedError):
        await rl.acquire("p", keys, 1, 1, 0)
    assert rl.fallbacks == 3 and "limited by this worker's share" in caplog.text
    await rl.aclose()

"""The loop's one timer for every request's deadline (engine/providers/per_loop.py): requests
past their deadline expire, finished ones never do, an earlier deadline is not kept waiting
behind a later one, and thousands of requests in flight share one timer handle."""

from __future__ import annotations

import asyncio

from engine.providers.per_loop import DeadlineWatch, watch_of


class _Request:
    def __init__(self) -> None:
        self.expired_at: float | None = None

    def expire(self) -> None:
        self.expired_at = asyncio.get_running_loop().time()


async def test_requests_past_their_deadline_expire_and_finished_ones_do_not() -> None:
    loop = asyncio.get_running_loop()
    watch = DeadlineWatch(loop)
    now = loop.time()
    late, done, later = _Request(), _Request(), _Request()
    watch.add(late, now + 0.05)
    watch.add(done, now + 0.05)
    watch.add(later, now + 0.25)
    watch.discard(done)  # its answer came
    await asyncio.sleep(0.15)
    assert late.expired_at is not None and late.expired_at >= now + 0.05
    assert done.expired_at is None and later.expired_at is None
    await asyncio.sleep(0.2)  # the timer armed itself again for the one left
    assert later.expired_at is not None and later.expired_at >= now + 0.25


async def test_an_earlier_deadline_fires_first() -> None:
    loop = asyncio.get_running_loop()
    watch = DeadlineWatch(loop)
    now = loop.time()
    slow, quick = _Request(), _Request()
    watch.add(slow, now + 5.0)
    watch.add(quick, now + 0.05)
    await asyncio.sleep(0.15)
    assert quick.expired_at is not None and slow.expired_at is None
    watch.discard(slow)


async def test_requests_in_flight_share_one_timer() -> None:
    loop = asyncio.get_running_loop()
    watch = watch_of(loop)
    assert watch_of(loop) is watch
    timers = len(loop._scheduled)  # type: ignore[attr-defined]  # the loop's timer heap
    requests = [_Request() for _ in range(2000)]
    now = loop.time()
    for i, request in enumerate(requests):
        watch.add(request, now + 60.0 + i / 1000)
    assert len(loop._scheduled) == timers + 1  # type: ignore[attr-defined]
    for request in requests:
        watch.discard(request)
    assert not any(r.expired_at for r in requests)

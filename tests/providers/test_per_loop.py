"""What one loop's requests share (engine/providers/per_loop.py). The one timer for every
request's deadline: requests past their deadline expire, finished ones never do, an earlier
deadline is not kept waiting behind a later one, and thousands of requests in flight share
one timer handle. The turn's writes: the first leaves at once, the rest at the turn's end,
and a request alone in flight schedules nothing."""

from __future__ import annotations

import asyncio

from engine.providers.per_loop import DeadlineWatch, TurnWrites, watch_of


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


class _Transport:
    def __init__(self, sent: list[bytes]) -> None:
        self.sent = sent

    def write(self, data: bytes) -> None:
        self.sent.append(data)

    def is_closing(self) -> bool:
        return False


async def test_a_turns_writes_after_the_first_leave_at_its_end() -> None:
    loop = asyncio.get_running_loop()
    writes, sent = TurnWrites(loop), []
    transport = _Transport(sent)
    writes.write(transport, b"a", False)  # type: ignore[arg-type]
    writes.write(transport, b"b", False)  # type: ignore[arg-type]
    writes.write(transport, b"c", False)  # type: ignore[arg-type]
    assert sent == [b"a"]
    await asyncio.sleep(0)
    assert sent == [b"a", b"b", b"c"]


async def test_a_request_alone_in_flight_is_written_at_once_with_no_turn_to_end() -> None:
    loop = asyncio.get_running_loop()
    writes, sent = TurnWrites(loop), []
    ready = len(loop._ready)  # type: ignore[attr-defined]  # the loop's callbacks to run
    writes.write(_Transport(sent), b"a", True)  # type: ignore[arg-type]
    assert sent == [b"a"] and len(loop._ready) == ready  # type: ignore[attr-defined]
    watch, request = DeadlineWatch(loop), _Request()
    watch.add(request, loop.time() + 60)
    assert watch.alone()
    watch.add(_Request(), loop.time() + 60)
    assert not watch.alone()

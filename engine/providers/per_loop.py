"""What the connections on one event loop share: the turn's request writes, and one
timer for the deadlines of every request in flight on the loop.

Why one timer for deadlines, not `asyncio.timeout_at` around each request (what http.py
did): that is a timer handle per request, pushed onto and later popped off the loop's
heap, each step comparing handles in Python, plus the context manager's own task
bookkeeping: 33k of the ~222k instructions a POST cost through this client (callgrind,
bench.runtime's upstream, 50 in flight). A request's deadline is almost never reached, so
nothing needs doing per request but noting it: `add` records the deadline and arms the
one timer only when this deadline comes before the armed one; `discard` forgets it when
the answer (or, for a stream, its headers) arrives. When the timer fires it expires
whatever is past its deadline and arms itself for the earliest one left, so it fires
about once per deadline's length, not once per request. Memory is one entry per request
in flight.
"""

from __future__ import annotations

import asyncio
import math
import weakref
from typing import Protocol


class Expiring(Protocol):
    """What the watch can end: a request past its deadline fails with TimeoutError."""

    def expire(self) -> None: ...


class TurnWrites:
    """One loop's request writes: the first of a turn leaves at once (a lone request waits
    for nothing), the rest at the turn's end, so under load a busy upstream is woken once
    for them all rather than once a request. On two cores shared with the upstream this
    took its CPU per request from 31-44 to 18-25 us and kept a second `engine serve`
    worker's CPU per request at one worker's (bench.workers, Redis state: two workers
    1.43x -> 1.69x the throughput of one). A request alone in flight on its loop has no
    turn to share and is written at once, with no turn to end: the end was one more loop
    iteration a request, 10k of the 211k instructions of a sequential POST (callgrind)."""

    __slots__ = ("_loop", "_queued", "_turn")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = weakref.ref(loop)  # weak: the registry below is keyed by the loop
        self._queued: list[tuple[asyncio.Transport, bytes]] = []
        self._turn: asyncio.Handle | None = None

    def write(self, transport: asyncio.Transport, data: bytes, alone: bool) -> None:
        """Send `data` now or at the turn's end; `alone`: no other request is in flight."""
        if alone:
            transport.write(data)
            return
        if self._turn is not None:
            self._queued.append((transport, data))
            return
        transport.write(data)
        loop = self._loop()
        if loop is not None:
            self._turn = loop.call_soon(self._end)

    def _end(self) -> None:
        self._turn = None
        queued, self._queued = self._queued, []
        for transport, data in queued:
            if not transport.is_closing():
                transport.write(data)


class DeadlineWatch:
    """The deadlines of one loop's requests in flight, and the timer that enforces them."""

    __slots__ = ("_at", "_loop", "_pending", "_timer")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = weakref.ref(loop)  # weak: the registry below is keyed by the loop
        self._pending: dict[Expiring, float] = {}  # request -> its deadline (loop time)
        self._timer: asyncio.TimerHandle | None = None
        self._at = math.inf  # when the timer fires

    def add(self, request: Expiring, deadline: float) -> None:
        """Expire `request` at `deadline` unless it is discarded first."""
        self._pending[request] = deadline
        if deadline < self._at:
            self._arm(deadline)

    def alone(self) -> bool:
        """At most one request is in flight on the loop."""
        return len(self._pending) <= 1

    def discard(self, request: Expiring) -> None:
        """The request is done (or abandoned): its deadline no longer applies."""
        self._pending.pop(request, None)

    def _arm(self, at: float) -> None:
        loop = self._loop()
        if loop is None:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._at = at
        self._timer = loop.call_at(at, self._fire)

    def _fire(self) -> None:
        loop = self._loop()
        self._timer, self._at = None, math.inf
        if loop is None:
            return
        now, earliest = loop.time(), math.inf
        expired = []
        for request, deadline in self._pending.items():
            if deadline <= now:
                expired.append(request)
            elif deadline < earliest:
                earliest = deadline
        for request in expired:
            del self._pending[request]
            request.expire()
        if earliest < math.inf:
            self._arm(earliest)


class _Shared:
    """A loop's shared parts, made on first use; they go with the loop."""

    __slots__ = ("watch", "writes")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.writes = TurnWrites(loop)
        self.watch = DeadlineWatch(loop)


_SHARED: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Shared] = weakref.WeakKeyDictionary()


def _shared(loop: asyncio.AbstractEventLoop) -> _Shared:
    shared = _SHARED.get(loop)
    if shared is None:
        shared = _SHARED[loop] = _Shared(loop)
    return shared


def turn_writes_of(loop: asyncio.AbstractEventLoop) -> TurnWrites:
    """The loop's turn writes."""
    return _shared(loop).writes


def watch_of(loop: asyncio.AbstractEventLoop) -> DeadlineWatch:
    """The loop's deadline watch."""
    return _shared(loop).watch

"""Keep-alive connections to one origin: at most `limit` open, FIFO waiters beyond.

How a connection is opened (directly with Happy Eyeballs, through a proxy) is the `dial`
callable's business (dial.py, proxy.py); the pool only counts, parks and hands out. An
idle connection is handed out again only while its socket is quiet (no close and no stray
bytes pending: `Connection.quiet`), so a request is never written to a connection the
upstream already dropped. `ping` always opens a fresh connection: health is measured on a
new handshake with the upstream, never on an idle socket that may be stale.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable

from .connection import KEEPALIVE_S, Connection

__all__ = ["Dial", "Pool"]

#: Connects a new Connection (it gets `connection_made` with its transport) or raises OSError.
Dial = Callable[[Connection], Awaitable[None]]

#: Idle longer than this, a connection's socket is polled before reuse. Upstreams close idle
#: connections after seconds (uvicorn and Node 5 s, nginx 75 s), so one used within the last
#: second needs no system call: the hot path of back-to-back calls stays free of it.
POLL_AFTER_S = 1.0


def _usable(conn: Connection, now: float) -> bool:
    idle_for = now - conn.idle_since
    if conn.closed or idle_for >= KEEPALIVE_S:
        return False
    return idle_for < POLL_AFTER_S or conn.quiet()


class Pool:
    """Keep-alive connections to one origin: at most `limit` open, FIFO waiters beyond."""

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop, dial: Dial) -> None:
        self._dial = dial
        self._limit = max(1, limit)
        self._loop = loop
        self._idle: list[Connection] = []  # the most recently used is reused first
        self._open = 0  # idle + busy + connecting, counted against the limit
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.closed = False

    async def acquire(self, connect_s: float) -> tuple[Connection, bool]:
        """A connection and whether it was reused (a new one is opened within `connect_s`).

        Waiting for a free slot has no bound here: the caller bounds it (http.py keeps
        that wait apart from the upstream's deadlines)."""
        if self._waiters:  # others queued first: no barging past them
            await self._wait_turn()
        while True:
            conn = self._reuse()
            if conn is not None:
                return conn, True
            if self._open < self._limit:
                return await self._connect(connect_s), False
            await self._wait_turn()  # each release hands one waiter a connection or a slot

    def take_idle(self) -> Connection | None:
        """An idle connection ready now, or None when the caller must `acquire` (none idle,
        or others queued first). The common case of back-to-back calls needs no coroutine
        and no timer (http.py)."""
        return None if self._waiters else self._reuse()

    def _reuse(self) -> Connection | None:
        idle, now = self._idle, self._loop.time()
        while idle:
            conn = idle.pop()
            if _usable(conn, now):
                return conn
            conn.close()
            self._open -= 1
        return None

    def _prune(self) -> None:
        """Drop idle connections the upstream closed (or that expired)."""
        now = self._loop.time()
        keep = []
        for conn in self._idle:
            if _usable(conn, now):
                keep.append(conn)
            else:
                conn.close()
                self._open -= 1
        self._idle[:] = keep

    async def _wait_turn(self) -> None:
        turn = self._loop.create_future()
        self._waiters.append(turn)
        try:
            await turn
        except BaseException:
            if turn.done() and not turn.cancelled():
                self._wake()  # we were handed a turn we cannot use: pass it on
            else:
                self._waiters.remove(turn)
            raise

    async def _connect(self, connect_s: float) -> Connection:
        self._open += 1
        conn = Connection(self._loop)
        try:
            async with asyncio.timeout(connect_s):
                await self._dial(conn)
        except BaseException:
            conn.close()
            self._open -= 1
            self._wake()
            raise
        return conn

    def release(self, conn: Connection) -> None:
        """Give a connection back: kept when its answer was complete, else closed."""
        if conn.reusable and not self.closed:
            self._park(conn)
        else:
            conn.close()
            self._open -= 1
        self._wake()

    def _park(self, conn: Connection) -> None:
        conn.idle_since = self._loop.time()
        self._idle.append(conn)

    def _wake(self) -> None:
        waiters = self._waiters
        while waiters:
            turn = waiters.popleft()
            if not turn.done():
                turn.set_result(None)
                return

    async def warm(self, connections: int, connect_s: float) -> None:
        """Open connections up to `connections` idle ones (never past the limit)."""
        self._prune()
        want = min(connections - len(self._idle), self._limit - self._open)
        opened = await asyncio.gather(*(self._connect(connect_s) for _ in range(max(0, want))))
        for conn in opened:  # a fresh connection has answered nothing yet, so park it as is
            self._park(conn)
            self._wake()

    async def ping(self, connect_s: float) -> None:
        """Open a fresh connection (TCP, proxy and TLS handshakes) or raise why not.

        Stale idle connections go first; the fresh one then takes the place of the oldest
        idle one (so pinging never grows the pool), or is closed when the pool is full."""
        self._prune()
        conn = await self._connect(connect_s)
        if self._idle:
            oldest = self._idle.pop(0)
            oldest.close()
            self._open -= 1
        if self._open <= self._limit and not self.closed:
            self._park(conn)
        else:
            conn.close()
            self._open -= 1
        self._wake()

    def close(self) -> None:
        self.closed = True
        for conn in self._idle:
            conn.close()
        self._idle.clear()

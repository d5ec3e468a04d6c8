"""Writes that must reach their store before an answer leaves this process.

Why: a call's cost is booked in the shared store (the Redis budget's BOOK) before its
answer leaves, so a replica killed right after answering has booked what it answered. The
plain way is to write the booking at once, one system call per call, and under load that
was one write per call for this process and one read and one reply for Redis (most of
Redis's CPU per call: the kernel's, not the script's). A server that writes its answers at
the end of the loop's turn can do better: it `arm`s this module and calls `flush` before
any answer bytes leave; a store then queues its booking (`hold`), and every booking of the
turn leaves in one write ahead of the turn's answers (measured ~10-17 bookings per write at
50 connections, bench.workers).

Nothing is held unless a server armed it: a library caller gets its answer as a return
value, with no write this module could order, so stores write their bookings at once.
Held flushes are per thread: each belongs to a connection of that thread's event loop
(a server worker's loop; the engine's own loop thread for its synchronous API keeps its
own), so a flush never writes on another loop's connection.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

_armed = False
_holders = False  # a store of this process holds writes back when armed (`will_hold`)
_local = threading.local()  # .held: id(its owner) -> flush, each at most once


def _held() -> dict[int, Callable[[], None]]:
    held: dict[int, Callable[[], None]] | None = getattr(_local, "held", None)
    if held is None:
        held = _local.held = {}
    return held


def arm() -> None:
    """This process's answers go out only through writers that call `flush` first."""
    global _armed
    _armed = True


def armed() -> bool:
    return _armed


def will_hold() -> None:
    """Said by a store that holds writes back under an armed server (at its construction):
    the server's answers then wait for the end of their loop's turn, behind those writes.
    Without such a store an answer leaves as soon as it is written (server/protocol.py)."""
    global _holders
    _holders = True


def holders() -> bool:
    return _holders


def hold(owner: object, flush: Callable[[], None]) -> None:
    """Run `owner`'s `flush` before the next answer is written (the owner may run it
    sooner, at the end of its loop's turn; a flush with nothing queued does nothing)."""
    _held().setdefault(id(owner), flush)


def flush() -> None:
    """Write whatever stores hold back; called by the answer's writer before it writes."""
    held = _held()
    while held:
        _, pending = held.popitem()
        pending()

"""A server's bookings of one loop turn, merged: one BOOK per workspace and day.

Why: a call lent its worst case from room booked ahead (redis_budget_ahead.py) books only
its cost, and under a server armed for it (engine/state/before_answer.py) every booking of
a turn already left in one write ahead of the turn's answers. Redis still ran one script
per call (~12 us of its CPU at 50 connections: most of what Redis spent per request), and
the worker packed a command and read a reply per call. A booking only adds its cost to the
workspace's day and month, so the turn's bookings of one workspace add up to one: the sum
is booked once, with the same promise (written before any answer of the turn leaves).

Order still holds where it matters: a block given back must not leave Redis before the
costs it covered are booked, so the store sends what is merged before it gives a block
back (`flush`), and a read of spend sends it first too (`before_answer.flush`). A booking
sent earlier than its call's place in the turn is only ever more conservative.

Merged bookings are per thread, like held writes: a server worker's loop merges its own.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from engine.state import before_answer

#: (workspace, UTC day number) -> nano-dollars booked in this turn, not yet sent.
Pending = dict[tuple[str, int], int]


class TurnBookings:
    """Costs to book, merged per workspace and day until the turn's end or the next answer."""

    def __init__(self, send: Callable[[str, int, int], None]) -> None:
        self._send = send  # (workspace, day number, nanos): one BOOK, held for the answer
        before_answer.will_hold()
        self._local = threading.local()

    def _pending(self) -> Pending:
        pending: Pending | None = getattr(self._local, "pending", None)
        if pending is None:
            pending = self._local.pending = {}
        return pending

    def add(self, workspace: str, day: int, cost: int) -> None:
        """Book `cost` with the turn's other bookings of `workspace` on `day`."""
        pending = self._pending()
        if not pending:  # the turn's first: sent before an answer, or at the turn's end
            before_answer.hold(self, self.flush)
            asyncio.get_running_loop().call_soon(self.flush)
        key = (workspace, day)
        pending[key] = pending.get(key, 0) + cost

    def flush(self) -> None:
        """Send what this thread merged so far (each sum as one held BOOK)."""
        pending = self._pending()
        while pending:
            (workspace, day), cost = pending.popitem()
            self._send(workspace, day, cost)

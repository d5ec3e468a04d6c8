"""The guard's per-connection Deadline on a hand-driven clock: it fires once, at the latest
deadline set, whichever timer happened to be armed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

from engine.server.guard import Deadline


class _Handle:
    def __init__(self, when: float, fn: Callable[[], None]) -> None:
        self.when, self.fn, self.cancelled = when, fn, False

    def cancel(self) -> None:
        self.cancelled = True


class _Loop:
    """`time` and `call_at`, advanced by hand."""

    def __init__(self) -> None:
        self.now = 0.0
        self.handles: list[_Handle] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, fn: Callable[[], None]) -> _Handle:
        handle = _Handle(when, fn)
        self.handles.append(handle)
        return handle

    def armed(self) -> list[float]:
        return [h.when for h in self.handles if not h.cancelled]

    def advance(self, to: float) -> None:
        self.now = to
        for handle in list(self.handles):
            if not handle.cancelled and handle.when <= to:
                self.handles.remove(handle)
                handle.fn()


def _deadline() -> tuple[Deadline, _Loop, list[str]]:
    loop = _Loop()
    return Deadline(cast(asyncio.AbstractEventLoop, cast(Any, loop))), loop, []


def test_a_deadline_moved_later_fires_once_at_the_new_time() -> None:
    deadline, loop, fired = _deadline()
    deadline.set(10, lambda: fired.append("head"))
    loop.advance(1)
    deadline.set(30, lambda: fired.append("body"))  # later: the armed timer stays
    assert loop.armed() == [10]
    loop.advance(10)
    assert fired == [] and loop.armed() == [31]  # woke early, re-armed for the rest
    loop.advance(31)
    assert fired == ["body"] and not deadline.pending


def test_a_deadline_moved_earlier_rearms_at_once() -> None:
    deadline, loop, fired = _deadline()
    deadline.set(30, lambda: fired.append("late"))
    deadline.set(5, lambda: fired.append("soon"))
    assert loop.armed() == [5]
    loop.advance(5)
    assert fired == ["soon"]


def test_a_cleared_deadline_never_fires_and_cancel_drops_the_timer() -> None:
    deadline, loop, fired = _deadline()
    deadline.set(10, lambda: fired.append("x"))
    deadline.clear()
    loop.advance(100)
    assert fired == [] and loop.armed() == []
    deadline.set(10, lambda: fired.append("y"))
    deadline.cancel()
    assert loop.armed() == [] and not deadline.pending

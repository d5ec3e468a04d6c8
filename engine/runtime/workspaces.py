"""Bounded per-name budget buckets: however many workspace names clients invent, one
process books at most `MAX_NAMES` of them one by one each UTC month; the rest share one
bucket, `OVERFLOW`, under the same caps (stricter than per-name, never looser).

Why here and not in each store: a workspace that is not listed in models.yaml (and with no
`"*"` pool) is booked under its own name, and every store keeps an entry per name it is
given: the SQLite file a row, Redis a key, the in-process store a dict entry. Bounding the
names before they reach the store bounds them all the same way. Assignments last the whole
month, so a name's monthly spend is never split between its own bucket and the overflow.
Listed workspaces and the `"*"` pool never come here (their buckets are fixed by config).
"""

from __future__ import annotations

from engine.clock import Clock
from engine.state.budget import MAX_WORKSPACES as MAX_NAMES
from engine.state.budget import OVERFLOW
from engine.state.money import utc_month

__all__ = ["MAX_NAMES", "OVERFLOW", "WorkspaceNames"]


class WorkspaceNames:
    """Which bucket an unlisted workspace name books under this month."""

    __slots__ = ("_clock", "_max", "_month", "_names")

    def __init__(self, clock: Clock, max_names: int = MAX_NAMES) -> None:
        self._clock, self._max = clock, max_names
        self._month = ""
        self._names: set[str] = set()

    def bucket(self, name: str) -> str:
        """`name` while there is room (or it already has its own bucket), else OVERFLOW."""
        month = utc_month(self._clock.time())
        if month != self._month:
            self._month, self._names = month, set()
        names = self._names
        if name in names:
            return name
        if len(names) < self._max:
            names.add(name)
            return name
        return OVERFLOW

    def __len__(self) -> int:
        return len(self._names)

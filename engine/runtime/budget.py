"""Per-workspace daily and monthly spending limits that concurrent requests cannot overspend.

The protocol is reserve -> call -> settle (or release):

- `reserve` books the call's worst case (input tokens x input price + max output x output
  price) against the workspace's current UTC day and month, or raises
  `BudgetExceededError` when spent + already reserved + this would pass a limit. The check
  and the booking happen under one lock with no `await` in between, so any number of
  concurrent tasks (or threads) see each other's reservations: that is what makes
  overspending impossible, not luck in scheduling.
- `settle` replaces the reservation by the real cost; `release` drops it (failure, cancel).
  Both are idempotent, so a `finally:` that releases after a settle is harmless.

A reservation counts against the day and month it was made in, and settles into them, even
if the call ends after midnight: the limit it was checked against is the one it spends.

Money is kept as integer nano-dollars (1e-9 USD): sums of many floats drift, and a budget
check that must never be wrong by a rounding error wants exact arithmetic. Reservations
round up, limits round down, so rounding can only ever err on the side of not spending.

Spend survives restarts through the ledger: `restore(rows)` (or `from_ledger`) rebuilds
this month's settled spend from daily totals. A shared backend (Redis with a Lua script,
Postgres with `SELECT ... FOR UPDATE`) implements the same four calls; see docs/state.md.
"""

from __future__ import annotations

import calendar
import math
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from engine.errors import BudgetExceededError
from engine.runtime.clock import Clock
from engine.runtime.state import Reservation


def utc_day(ts: float) -> str:
    """'YYYY-MM-DD' of a Unix time in UTC: the budget's (and the ledger's) day."""
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


def utc_month(ts: float) -> str:
    """'YYYY-MM' of a Unix time in UTC."""
    return time.strftime("%Y-%m", time.gmtime(ts))


NANO = 1_000_000_000  # nano-dollars per USD


def nanos_up(usd: float) -> int:
    return math.ceil(usd * NANO)


def nanos(usd: float) -> int:
    return round(usd * NANO)


@dataclass(slots=True)
class _Open:
    """An open reservation (in nano-dollars) and the periods it was booked in."""

    workspace: str
    amount: int
    day: str
    month: str


class SpendSource(Protocol):
    """What `from_ledger` needs: daily settled spend since a time (see SQLiteLedger)."""

    def spend_since(self, since: float) -> Iterable[tuple[str, str, float]]: ...


class InProcessBudgetStore:
    """Budgets for one process. Implements `engine.runtime.state.BudgetStore`."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._settled: dict[tuple[str, str], int] = {}  # (workspace, day|month) -> nano-USD
        self._reserved: dict[tuple[str, str], int] = {}
        self._open: dict[int, _Open] = {}
        self._next_token = 0

    @classmethod
    def from_ledger(cls, clock: Clock, ledger: SpendSource) -> InProcessBudgetStore:
        """A store whose month-to-date spend is rebuilt from the ledger (call on start)."""
        store = cls(clock)
        store.restore(ledger.spend_since(month_start(clock.time())))
        return store

    def restore(self, rows: Iterable[tuple[str, str, float]]) -> None:
        """Add settled spend from `(workspace, 'YYYY-MM-DD', usd)` daily totals."""
        with self._lock:
            for workspace, day, usd in rows:
                self._add(self._settled, workspace, day, day[:7], nanos(usd))

    async def reserve(
        self,
        workspace: str,
        amount_usd: float,
        daily_usd: float | None,
        monthly_usd: float | None,
    ) -> Reservation:
        """Book the worst case, or raise BudgetExceededError naming the limit it would pass."""
        check_amount(amount_usd)
        now = self._clock.time()
        day, month = utc_day(now), utc_month(now)
        amount = nanos_up(amount_usd)
        with self._lock:
            self._check(workspace, day, amount, daily_usd, "daily")
            self._check(workspace, month, amount, monthly_usd, "monthly")
            self._add(self._reserved, workspace, day, month, amount)
            self._next_token += 1
            token = self._next_token
            self._open[token] = _Open(workspace, amount, day, month)
        return Reservation(workspace, amount_usd, token)

    def _check(
        self, workspace: str, period: str, amount: int, limit: float | None, name: str
    ) -> None:
        if limit is None:
            return
        key = (workspace, period)
        spent = self._settled.get(key, 0)
        held = self._reserved.get(key, 0)
        check_limit(workspace, period, name, limit, spent, held, amount)

    async def settle(self, reservation: Reservation, actual_usd: float) -> None:
        """Replace the reservation by the real cost (recorded as is, even above the hold)."""
        check_amount(actual_usd)
        with self._lock:
            held = self._unreserve(reservation)
            if held is not None:
                self._add(self._settled, held.workspace, held.day, held.month, nanos(actual_usd))

    async def release(self, reservation: Reservation) -> None:
        """Drop the reservation: the call failed or was cancelled and cost nothing."""
        with self._lock:
            self._unreserve(reservation)

    def _unreserve(self, reservation: Reservation) -> _Open | None:
        """Close an open reservation (under the lock); None when it was already closed."""
        held = self._open.pop(reservation.token, None)
        if held is not None:
            self._add(self._reserved, held.workspace, held.day, held.month, -held.amount)
        return held

    def spent(self, workspace: str) -> Mapping[str, float]:
        """{"day": usd, "month": usd} for the current UTC periods, open reservations included."""
        return self._per_period(workspace, self._settled, self._reserved)

    def reserved(self, workspace: str) -> Mapping[str, float]:
        """{"day": usd, "month": usd} held by open reservations only."""
        return self._per_period(workspace, self._reserved)

    def _per_period(
        self, workspace: str, *tables: dict[tuple[str, str], int]
    ) -> Mapping[str, float]:
        """The tables' sum for the workspace's current UTC day and month, in USD."""
        now = self._clock.time()
        periods = {"day": utc_day(now), "month": utc_month(now)}
        with self._lock:
            return {
                name: sum(t.get((workspace, period), 0) for t in tables) / NANO
                for name, period in periods.items()
            }

    @staticmethod
    def _add(
        table: dict[tuple[str, str], int], workspace: str, day: str, month: str, nanos: int
    ) -> None:
        for period in (day, month):
            key = (workspace, period)
            table[key] = table.get(key, 0) + nanos


def check_limit(
    workspace: str, period: str, name: str, limit: float, spent: int, held: int, amount: int
) -> None:
    """Raise BudgetExceededError when spent + held + amount (nano-USD) would pass `limit`.

    Every store shares this one check, so their refusals agree to the nano-dollar and read
    the same."""
    if spent + held + amount > math.floor(limit * NANO):
        raise BudgetExceededError(
            f"workspace {workspace!r} {name} budget ${limit:.4f} ({period}) would be "
            f"exceeded: spent ${spent / NANO:.4f}, reserved ${held / NANO:.4f}, "
            f"this call up to ${amount / NANO:.4f}"
        )


def check_amount(usd: float) -> None:
    if not (math.isfinite(usd) and usd >= 0):
        raise ValueError(f"a budget amount must be a finite number >= 0, got {usd!r}")


def day_start(ts: float) -> float:
    """Unix time of 00:00 UTC on `ts`'s day: where the budget's (and the ledger's) day begins."""
    t = time.gmtime(ts)
    return float(calendar.timegm((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0, 0, 0, 0)))


def month_start(ts: float) -> float:
    """Unix time of 00:00 UTC on the first day of `ts`'s month."""
    t = time.gmtime(ts)
    return float(calendar.timegm((t.tm_year, t.tm_mon, 1, 0, 0, 0, 0, 0, 0)))

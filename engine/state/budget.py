"""Per-workspace daily and monthly spending limits for one process: `InProcessBudgetStore`.

The protocol (engine.state.protocols.BudgetStore) is reserve -> call -> settle (or release):

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
Amounts are integer nano-dollars (engine.state.money).

Memory is bounded whatever names callers invent for `metadata.workspace` (40,000 names
used to add 34 MB, never freed): an entry that returns to zero is dropped, entries of past
days and months are dropped when the day changes (no check reads them again), and at most
`max_workspaces` names are tracked; beyond that, new names share one bucket, `OVERFLOW`,
under the same limits, which is stricter than per-name tracking and never looser.

A store built with `totals=True` (the client-key scope, engine.runtime.clients) also keeps an
all-time total per name (period `ALL`), checked against `reserve`'s `total_usd`; a store
without it refuses a `total_usd` (ValueError) rather than ignore it.

Spend survives restarts through the ledger: `restore(ledger)` rebuilds this month's settled
spend from its daily totals, once per store. Several processes need one shared store
instead (engine.state.sqlite_budget on one host; see docs/state.md).
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Iterable, Mapping
from dataclasses import dataclass

from engine.clock import Clock
from engine.state.money import (
    ALL,
    NANO,
    check_amount,
    check_limit,
    check_totals,
    month_start,
    nanos,
    nanos_up,
    utc_day,
    utc_month,
)
from engine.state.protocols import Reservation, SpendSource


@dataclass(slots=True)
class _Open:
    """An open reservation (in nano-dollars) and the periods it was booked in."""

    workspace: str
    amount: int
    day: str
    month: str


#: Workspace names one in-process store tracks one by one (see the module docstring).
MAX_WORKSPACES = 10_000
#: The bucket that the names beyond MAX_WORKSPACES share.
OVERFLOW = "(other workspaces)"


class InProcessBudgetStore:
    """Budgets for one process. Implements `engine.state.protocols.BudgetStore`."""

    def __init__(
        self,
        clock: Clock,
        max_workspaces: int = MAX_WORKSPACES,
        *,
        scope: str = "workspace",
        totals: bool = False,
    ) -> None:
        self._clock = clock
        self._scope = scope  # what a refusal calls the name ("workspace", "API key")
        self._totals = totals  # also keep an all-time total per name (client keys)
        self._lock = threading.Lock()
        self._settled: dict[tuple[str, str], int] = {}  # (workspace, day|month) -> nano-USD
        self._reserved: dict[tuple[str, str], int] = {}
        self._open: dict[int, _Open] = {}
        self._next_token = 0
        self._restored = False
        self._max_workspaces = max_workspaces
        self._names: dict[str, int] = {}  # workspace -> its entries in both tables
        self._today = ""  # the UTC day entries were last pruned for

    def tracked(self) -> int:
        """How many workspace names hold entries now (at most max_workspaces + 1)."""
        with self._lock:
            return len(self._names)

    def _bucket(self, workspace: str) -> str:
        """The name spend is booked under: its own while there is room, else OVERFLOW."""
        if workspace in self._names or len(self._names) < self._max_workspaces:
            return workspace
        return OVERFLOW

    def _prune(self, day: str, month: str) -> None:
        """On a new UTC day, drop settled entries of past days and months (under the lock)."""
        if day == self._today:
            return
        self._today = day
        for key in [k for k in self._settled if k[1] not in (day, month, ALL)]:
            self._drop(self._settled, key)

    async def restore(self, source: SpendSource) -> None:
        """Add this month's settled spend from the ledger's daily totals (once per store)."""
        if self._restored:
            return
        self._restored = True
        self.add_settled(await source.spend_since(month_start(self._clock.time())))

    def add_settled(self, rows: Iterable[tuple[str, str, float]]) -> None:
        """Add settled spend from `(workspace, 'YYYY-MM-DD', usd)` daily totals."""
        with self._lock:
            for workspace, day, usd in rows:
                self._add(self._settled, self._bucket(workspace), day, day[:7], nanos(usd))

    def reserve(
        self,
        workspace: str,
        amount_usd: float,
        daily_usd: float | None,
        monthly_usd: float | None,
        total_usd: float | None = None,
    ) -> Awaitable[Reservation]:
        """Book the worst case now, or raise BudgetExceededError naming the limit it would
        pass; the awaitable only hands the reservation over."""
        return _ready(self._book(workspace, amount_usd, daily_usd, monthly_usd, total_usd))

    def _book(
        self,
        workspace: str,
        amount_usd: float,
        daily_usd: float | None,
        monthly_usd: float | None,
        total_usd: float | None,
    ) -> Reservation:
        check_amount(amount_usd)
        check_totals(self._totals, total_usd)
        now = self._clock.time()
        day, month = utc_day(now), utc_month(now)
        amount = nanos_up(amount_usd)
        with self._lock:
            self._prune(day, month)
            bucket = self._bucket(workspace)
            self._check(bucket, day, amount, daily_usd, "daily")
            self._check(bucket, month, amount, monthly_usd, "monthly")
            self._check(bucket, ALL, amount, total_usd, "total")
            self._add(self._reserved, bucket, day, month, amount)
            self._next_token += 1
            token = self._next_token
            self._open[token] = _Open(bucket, amount, day, month)
        return Reservation(workspace, amount_usd, token)

    def _check(
        self, workspace: str, period: str, amount: int, limit: float | None, name: str
    ) -> None:
        if limit is None:
            return
        key = (workspace, period)
        spent = self._settled.get(key, 0)
        held = self._reserved.get(key, 0)
        check_limit(workspace, period, name, limit, spent, held, amount, scope=self._scope)

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

    async def spent(self, workspace: str) -> Mapping[str, float]:
        """{"day": usd, "month": usd} for the current UTC periods, open reservations included."""
        return self._per_period(workspace, self._settled, self._reserved)

    def reserved(self, workspace: str) -> Mapping[str, float]:
        """{"day": usd, "month": usd} held by open reservations only (this process's view)."""
        return self._per_period(workspace, self._reserved)

    async def aclose(self) -> None:
        """Nothing to give back."""

    def _per_period(
        self, workspace: str, *tables: dict[tuple[str, str], int]
    ) -> Mapping[str, float]:
        """The tables' sum for the workspace's current UTC day and month, in USD."""
        now = self._clock.time()
        periods = {"day": utc_day(now), "month": utc_month(now)}
        if self._totals:
            periods["total"] = ALL
        with self._lock:
            bucket = self._bucket(workspace)
            return {
                name: sum(t.get((bucket, period), 0) for t in tables) / NANO
                for name, period in periods.items()
            }

    def _add(
        self, table: dict[tuple[str, str], int], workspace: str, day: str, month: str, nanos: int
    ) -> None:
        """Add to both periods' entries (and the total's); an entry at zero is dropped."""
        for period in (day, month, ALL) if self._totals else (day, month):
            key = (workspace, period)
            total = table.get(key, 0) + nanos
            if total:
                if key not in table:
                    self._names[workspace] = self._names.get(workspace, 0) + 1
                table[key] = total
            elif key in table:
                self._drop(table, key)

    def _drop(self, table: dict[tuple[str, str], int], key: tuple[str, str]) -> None:
        del table[key]
        left = self._names[key[0]] - 1
        if left:
            self._names[key[0]] = left
        else:
            del self._names[key[0]]


async def _ready(reservation: Reservation) -> Reservation:
    return reservation

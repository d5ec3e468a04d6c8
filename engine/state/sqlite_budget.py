"""Workspace budgets in one SQLite file, shared by every process that opens it.

Why: `InProcessBudgetStore` is exact within one process, but `engine serve --workers N`
runs N processes, and N separate stores could let a workspace spend N times its limit.
This store keeps the same protocol (reserve -> call -> settle / release) and the same
integer nano-dollar arithmetic, with the check-and-book of `reserve` done inside one
`BEGIN IMMEDIATE` transaction: SQLite lets one writer at a time past that point, so
reservations from any number of processes (and threads) see each other, just as the
in-process store's lock makes its tasks do.

Tables: `spend` holds settled nano-dollars per (workspace, period), where a period is a UTC
day 'YYYY-MM-DD' or month 'YYYY-MM'; `held` holds open reservations. A reservation whose
process died without settling stops counting after `hold_s` (default one hour, longer than
any call's deadline). On first use the month so far is seeded from the cost ledger, once,
in the same kind of transaction; after that this file is the record of spend (it is
written when a call settles, while the ledger is written in batches a moment later).

A transaction that finds the file free runs at once on the event loop; one that must wait
for another process's lock waits on a private thread, never blocking the loop
(sqlite_shared.py). When the file cannot be used, `reserve` fails closed with
a RoutingError (the server answers 503) rather than spend unchecked, while a failed `settle`
or `release` is logged and the call's answer kept. Only routes with a daily or monthly
budget reserve at all, so this costs nothing to calls without one.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Mapping
from pathlib import Path

from engine.clock import Clock
from engine.errors import RoutingError
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
from engine.state.sqlite_shared import SharedFile

log = logging.getLogger(__name__)

#: How long an unsettled reservation counts (a process that died cannot release it).
HOLD_S = 3600.0
#: How often a store deletes expired holds (they stop counting when they expire anyway).
PRUNE_S = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spend (
    workspace TEXT NOT NULL, period TEXT NOT NULL, nanos INTEGER NOT NULL,
    PRIMARY KEY (workspace, period)
);
CREATE TABLE IF NOT EXISTS held (
    token INTEGER PRIMARY KEY AUTOINCREMENT, workspace TEXT NOT NULL, day TEXT NOT NULL,
    month TEXT NOT NULL, nanos INTEGER NOT NULL, expires REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS held_by_workspace ON held (workspace);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def _seeded(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM meta WHERE key = 'seeded'").fetchone() is not None


class SQLiteBudgetStore:
    """Budgets shared across processes. Implements `engine.state.protocols.BudgetStore`."""

    def __init__(
        self,
        path: str | Path,
        clock: Clock,
        hold_s: float = HOLD_S,
        *,
        scope: str = "workspace",
        totals: bool = False,
    ) -> None:
        self.path = Path(path)
        self._scope = scope  # what a refusal calls the name ("workspace", "API key")
        self._totals = totals  # also keep an all-time total per name (period ALL)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._hold_s = hold_s
        self._file = SharedFile(self.path, _SCHEMA, "budget-sqlite")
        self._prune_at = 0.0  # when expired holds are next deleted (`_prune`)

    # -- the protocol ---------------------------------------------------------------------

    async def restore(self, source: SpendSource) -> None:
        """Seed the month so far from the ledger the first time the file is used (by any
        process); after that this file is the record of spend and `source` is not read."""
        if await self._file.run(_seeded):
            return
        rows = await source.spend_since(month_start(self._clock.time()))

        def seed(conn: sqlite3.Connection) -> None:
            if _seeded(conn):  # another worker seeded it while we read the ledger
                return
            for workspace, day, usd in rows:
                self._add(conn, workspace, self._periods(day, day[:7]), nanos(usd))
            conn.execute("INSERT INTO meta (key, value) VALUES ('seeded', 'ledger')")

        await self._file.run(seed)

    async def reserve(
        self,
        workspace: str,
        amount_usd: float,
        daily_usd: float | None,
        monthly_usd: float | None,
        total_usd: float | None = None,
    ) -> Reservation:
        """Book the worst case, or raise BudgetExceededError naming the limit it would pass."""
        check_amount(amount_usd)
        check_totals(self._totals, total_usd)
        now = self._clock.time()
        day, month, amount = utc_day(now), utc_month(now), nanos_up(amount_usd)
        limits = (
            (day, daily_usd, "daily"),
            (month, monthly_usd, "monthly"),
            (ALL, total_usd, "total"),
        )

        def book(conn: sqlite3.Connection) -> int:
            # The checks come first and write nothing, so a refusal fails only its own
            # caller when transactions are grouped (sqlite_shared.py).
            for period, limit, name in limits:
                if limit is not None:
                    self._check(conn, workspace, period, amount, limit, name, now)
            self._prune(conn, now)
            cur = conn.execute(
                "INSERT INTO held (workspace, day, month, nanos, expires) VALUES (?, ?, ?, ?, ?)",
                (workspace, day, month, amount, now + self._hold_s),
            )
            assert cur.lastrowid is not None
            return cur.lastrowid

        try:
            token = await self._file.run(book)
        except sqlite3.Error as exc:  # fail closed: spending unchecked is what budgets prevent
            raise RoutingError(
                f"budget store {self.path.name} unavailable ({type(exc).__name__}: {exc}); "
                "not spending without a budget check"
            ) from None
        return Reservation(workspace, amount_usd, token)

    async def settle(self, reservation: Reservation, actual_usd: float) -> None:
        """Replace the reservation by the real cost; a second settle or release is ignored."""
        check_amount(actual_usd)
        cost = nanos(actual_usd)

        def settle(conn: sqlite3.Connection) -> None:
            row = conn.execute(
                "DELETE FROM held WHERE token = ? RETURNING workspace, day, month",
                (reservation.token,),
            ).fetchone()
            if row is None:
                return
            workspace, day, month = row
            self._add(conn, workspace, self._periods(day, month), cost)

        try:
            await self._file.run(settle)
        except sqlite3.Error:  # the call has succeeded: keep its answer, lose only the record
            log.exception("budget store %s: could not settle a reservation", self.path.name)

    async def release(self, reservation: Reservation) -> None:
        """Drop the reservation: the call failed or was cancelled and cost nothing."""

        def release(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM held WHERE token = ?", (reservation.token,))

        try:
            await self._file.run(release)
        except sqlite3.Error:  # the hold expires after hold_s instead
            log.exception("budget store %s: could not release a reservation", self.path.name)

    async def spent(self, workspace: str) -> Mapping[str, float]:
        """{"day": usd, "month": usd} for the current UTC periods, open reservations included."""
        now = self._clock.time()
        periods = {"day": utc_day(now), "month": utc_month(now)}
        if self._totals:
            periods["total"] = ALL

        def read(conn: sqlite3.Connection) -> dict[str, float]:
            return {
                name: sum(self._used(conn, workspace, p, now)) / NANO for name, p in periods.items()
            }

        return await self._file.run(read)

    async def aclose(self) -> None:
        await self._file.aclose()

    def _periods(self, day: str, month: str) -> tuple[str, ...]:
        """The periods a settled cost counts in: its day and month, and the total if kept."""
        return (day, month, ALL) if self._totals else (day, month)

    # -- SQL ------------------------------------------------------------------------------

    def _check(
        self,
        conn: sqlite3.Connection,
        workspace: str,
        period: str,
        amount: int,
        limit: float,
        name: str,
        now: float,
    ) -> None:
        spent, held = self._used(conn, workspace, period, now)
        check_limit(workspace, period, name, limit, spent, held, amount, scope=self._scope)

    @staticmethod
    def _used(conn: sqlite3.Connection, workspace: str, period: str, now: float) -> tuple[int, int]:
        """(settled, held) nano-dollars of one period, in one statement."""
        held = "SELECT COALESCE(SUM(nanos), 0) FROM held WHERE workspace = ?"
        args: tuple[object, ...] = (workspace, period, workspace)
        if period != ALL:  # every open hold counts against the total
            held += f" AND {'day' if len(period) == 10 else 'month'} = ?"
            args += (period,)
        held += " AND expires >= ?"  # an expired hold no longer counts, deleted or not
        args += (now,)
        settled = "SELECT nanos FROM spend WHERE workspace = ? AND period = ?"
        row = conn.execute(f"SELECT COALESCE(({settled}), 0), ({held})", args).fetchone()
        return int(row[0]), int(row[1])

    def _prune(self, conn: sqlite3.Connection, now: float) -> None:
        """Delete expired holds (those of a process that died mid-call) now and then: they
        stopped counting when they expired, this only keeps the table small."""
        if now >= self._prune_at:
            conn.execute("DELETE FROM held WHERE expires < ?", (now,))
            self._prune_at = now + PRUNE_S

    @staticmethod
    def _add(
        conn: sqlite3.Connection, workspace: str, periods: tuple[str, ...], nanos: int
    ) -> None:
        """Add `nanos` to every one of `periods`, in one statement."""
        values = ", ".join("(?, ?, ?)" for _ in periods)
        conn.execute(
            f"INSERT INTO spend (workspace, period, nanos) VALUES {values} "
            "ON CONFLICT (workspace, period) DO UPDATE SET nanos = nanos + excluded.nanos",
            [v for period in periods for v in (workspace, period, nanos)],
        )

"""Client-key spend as the ledger recorded it, for the client-key budget store's restore.

A client key's budgets (engine/runtime/clients.py) are a second budget store of the same kind
as the workspaces', scoped by key id. Its `restore` asks a `SpendSource` for daily totals
per name; the ledger answers that per workspace, so this adapter answers it per client key
(the ledger's `client` column: the key's id, never its secret), from three totals:

- today's spend, booked on today;
- the rest of this month's, booked on the month's first day (the store adds a row to its
  day and its month; only the month is read again, since the first is not today);
- everything before this month, booked on 1970-01-01, which counts only in the all-time
  total that `budget_usd` is checked against.

So a restarted server (in-process store) or a fresh Redis sees each key's day, month and
total exactly as the ledger has them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from engine.clock import Clock
from engine.state.money import day_start, month_start, utc_day
from engine.state.protocols import Ledger

#: The day spend from before this month is booked on (it counts in the all-time total only).
LONG_AGO = "1970-01-01"


class ClientSpend:
    """A `SpendSource` that reads the ledger per client key instead of per workspace."""

    def __init__(self, ledger: Ledger, clock: Clock) -> None:
        self._ledger = ledger
        self._clock = clock

    async def spend_since(self, since: float) -> Sequence[tuple[str, str, float]]:
        """`(key id, day, usd)` rows whose sums per day, month and all time are the ledger's
        (`since` is not used: the all-time total needs every row)."""
        now = self._clock.time()
        today, month = day_start(now), month_start(now)
        ever = await self._by_client(0.0)
        this_month = await self._by_client(month)
        this_day = await self._by_client(today)
        rows: list[tuple[str, str, float]] = []
        for client, total in ever.items():
            d, m = this_day.get(client, 0.0), this_month.get(client, 0.0)
            for day, usd in ((utc_day(now), d), (utc_day(month), m - d), (LONG_AGO, total - m)):
                if usd > 0:
                    rows.append((client, day, usd))
        return rows

    async def _by_client(self, since: float) -> dict[str, float]:
        totals: Sequence[Mapping[str, Any]] = await self._ledger.totals(None, since, "client")
        return {str(r["client"]): float(r["cost_usd"]) for r in totals if r["client"]}

"""`CapturingLedger`: a ledger that keeps its rows in memory, to be read back in tests.

    ledger = CapturingLedger()
    eng = Engine.from_data(models, routes, ledger=ledger)
    await eng.arun(...)
    assert [r.outcome for r in ledger.where(provider="openai")] == ["ok"]

It implements the whole `engine.state.protocols.Ledger`, queries included, with the same
answers the SQLite ledger gives (the state test suite runs both), so code that reads a
ledger (budgets restoring at start, cost reports) can be tested against it too. Like the
SQLite ledger, it refuses rows after `aclose()` (they are counted in `dropped`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from engine.state.protocols import LedgerRow

#: What `totals` may group by, as for the SQLite ledger.
GROUPS = ("model", "provider", "workspace", "policy", "outcome", "client")


class CapturingLedger:
    """Implements `engine.state.protocols.Ledger` in memory."""

    def __init__(self) -> None:
        self.rows: list[LedgerRow] = []
        self.closed = False
        self.flushes = 0
        self.dropped = 0

    def record(self, row: LedgerRow) -> None:
        if self.closed:
            self.dropped += 1
            return
        self.rows.append(row)

    def where(self, **fields: Any) -> list[LedgerRow]:
        """The rows whose fields equal every one given, in the order recorded."""
        return [r for r in self.rows if all(getattr(r, k) == v for k, v in fields.items())]

    async def flush(self) -> None:
        self.flushes += 1

    async def aclose(self) -> None:
        self.closed = True

    async def totals(
        self, workspace: str | None, since: float, by: str
    ) -> Sequence[Mapping[str, Any]]:
        if by not in GROUPS:
            raise ValueError(f"cannot group by {by!r}; choose one of {', '.join(GROUPS)}")
        out = _aggregate(self._since(workspace, since), lambda r: getattr(r, by), by)
        return sorted(out, key=lambda g: (-g["cost_usd"], _order(g[by])))

    async def daily(self, workspace: str | None, since: float) -> Sequence[Mapping[str, Any]]:
        out = _aggregate(self._since(workspace, since), lambda r: _utc_day(r.ts), "day")
        return sorted(out, key=lambda g: g["day"])

    async def spend_since(self, since: float) -> list[tuple[str, str, float]]:
        spend: dict[tuple[str, str], float] = {}
        for r in self.rows:
            if r.ts >= since and r.workspace is not None and r.cost_usd is not None:
                key = (r.workspace, _utc_day(r.ts))
                spend[key] = spend.get(key, 0.0) + r.cost_usd
        return [(w, d, usd) for (w, d), usd in sorted(spend.items())]

    def _since(self, workspace: str | None, since: float) -> list[LedgerRow]:
        return [
            r
            for r in self.rows
            if r.ts >= since and (workspace is None or r.workspace == workspace)
        ]


def _aggregate(
    rows: Iterable[LedgerRow], key: Callable[[LedgerRow], Any], name: str
) -> list[dict[str, Any]]:
    groups: dict[Any, dict[str, Any]] = {}
    for r in rows:
        g = groups.setdefault(
            key(r),
            {
                name: key(r),
                "attempts": 0,
                "ok": 0,
                "cached": 0,
                "input_tokens": 0,
                "output_tokens": 0,
                "cache_read_tokens": 0,
                "cache_write_tokens": 0,
                "reasoning_tokens": 0,
                "cost_usd": 0.0,
                "unknown_cost": 0,
            },
        )
        g["attempts"] += 1
        g["ok"] += r.outcome == "ok"
        g["cached"] += int(r.cached)
        g["input_tokens"] += r.input_tokens
        g["output_tokens"] += r.output_tokens
        g["cache_read_tokens"] += r.cache_read_tokens
        g["cache_write_tokens"] += r.cache_write_tokens
        g["reasoning_tokens"] += r.reasoning_tokens
        if r.cost_usd is None:
            g["unknown_cost"] += 1
        else:
            g["cost_usd"] += r.cost_usd
    return list(groups.values())


def _order(value: Any) -> tuple[bool, str]:
    """SQLite's ORDER BY for a text column: NULL first, then by text."""
    return (value is not None, "" if value is None else str(value))


def _utc_day(ts: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ts))

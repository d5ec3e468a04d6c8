"""Spend reports over the cost ledger: totals by a dimension, series over time, failovers.

The `costs` command, `GET /v1/costs` and the dashboard all answer from here, so the three
never disagree. Reads go through their own read-only SQLite connection (WAL: safe while the
engine writes), over any window `[since, until)` of Unix times, optionally one workspace.

Dimensions (`by`): model, provider, workspace, policy, outcome, key (the client API key's
label, for calls that came through the server with keys configured) and day (UTC).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from engine.state.ledger_file import open_ledger
from engine.state.spend_sql import bucket_width, dimensions, group_column

#: `by` values and the SQL expression each groups on (never user text in the SQL).
DIMENSIONS: dict[str, str] = dimensions("date(ts, 'unixepoch')")
#: Columns newer ledgers have; an older file (opened read-only, not migrated) reads them as 0.
_NEWER = ("cache_read_tokens", "cache_write_tokens", "reasoning_tokens")

_AGGREGATES = (
    "COUNT(*) AS attempts, "
    "COALESCE(SUM(outcome = 'ok'), 0) AS ok, "
    "COALESCE(SUM(cached), 0) AS cached, "
    "COALESCE(SUM(input_tokens), 0) AS input_tokens, "
    "COALESCE(SUM(output_tokens), 0) AS output_tokens, "
    "COALESCE(SUM({cache_read_tokens}), 0) AS cache_read_tokens, "
    "COALESCE(SUM({cache_write_tokens}), 0) AS cache_write_tokens, "
    "COALESCE(SUM({reasoning_tokens}), 0) AS reasoning_tokens, "
    "COALESCE(SUM(cost_usd), 0.0) AS cost_usd, "
    "COALESCE(SUM(cost_usd IS NULL AND outcome = 'ok'), 0) AS unknown_cost"
)


def dimension(by: str, has_client: bool = True) -> str:
    """The SQL for a `by` value; ValueError naming the choices for anything else."""
    column = group_column(by, DIMENSIONS)
    # A ledger written before the `client` column existed (opened read-only, not migrated).
    return column if has_client or by != "key" else "''"


class SpendReport:
    """Read-only queries over one ledger file (opened lazily, so a server may start first)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._has_key = False
        self._aggregates = ""
        self._lock = threading.Lock()

    def _connection(self) -> sqlite3.Connection | None:
        if self._conn is None:
            if not self.path.is_file():
                return None
            open_ledger(self.path)  # raises ConfigError when the file is not a ledger
            uri = f"{self.path.resolve().as_uri()}?mode=ro"
            self._conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
            columns = {r[1] for r in self._conn.execute("PRAGMA table_info(attempts)")}
            self._has_key = "client" in columns
            self._aggregates = _AGGREGATES.format(**{c: c if c in columns else "0" for c in _NEWER})
        return self._conn

    def _client_column(self) -> bool:
        with self._lock:
            self._connection()
            return self._has_key

    def _select(self, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        with self._lock:
            conn = self._connection()
            if conn is None:
                return []
            cur = conn.execute(sql, params)
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def totals(
        self, by: str, since: float, until: float | None = None, workspace: str | None = None
    ) -> list[dict[str, Any]]:
        """Per `by` value: attempts, successes, cached, tokens, cost, unknown-cost count."""
        column = dimension(by, self._client_column())
        where, params = _where(since, until, workspace)
        sql = (
            f"SELECT {column} AS {by}, {self._aggregates} FROM attempts {where} "
            f"GROUP BY 1 ORDER BY cost_usd DESC, 1"
        )
        return self._select(sql, params)

    def series(
        self,
        by: str,
        since: float,
        until: float | None = None,
        workspace: str | None = None,
        bucket: str = "hour",
    ) -> list[dict[str, Any]]:
        """Cost and attempts per time bucket (start as Unix time `t`) and `by` value."""
        column = dimension(by, self._client_column())
        width = bucket_width(bucket)
        where, params = _where(since, until, workspace)
        sql = (
            f"SELECT CAST(ts / {width} AS INTEGER) * {width} AS t, {column} AS {by}, "
            f"COUNT(*) AS attempts, COALESCE(SUM(cost_usd), 0.0) AS cost_usd "
            f"FROM attempts {where} GROUP BY 1, 2 ORDER BY 1, 2"
        )
        return self._select(sql, params)

    def failovers(self, since: float, limit: int = 20) -> list[dict[str, Any]]:
        """The latest requests that took more than one attempt, each with its attempts."""
        sql = (
            "SELECT request_id, ts, provider, model, outcome, fallback_index, latency_ms "
            "FROM attempts WHERE request_id IN (SELECT request_id FROM attempts "
            "WHERE ts >= ? AND request_id != '' GROUP BY request_id HAVING COUNT(*) > 1 "
            "ORDER BY MAX(ts) DESC LIMIT ?) ORDER BY ts"
        )
        grouped: dict[str, dict[str, Any]] = {}
        for row in self._select(sql, [since, limit]):
            entry = grouped.setdefault(row["request_id"], {"request_id": row["request_id"]})
            entry["ts"] = row["ts"]
            entry.setdefault("attempts", []).append(
                {k: row[k] for k in ("provider", "model", "outcome", "fallback_index")}
            )
        return sorted(grouped.values(), key=lambda e: e["ts"], reverse=True)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _where(since: float, until: float | None, workspace: str | None) -> tuple[str, list[Any]]:
    clauses: list[str] = ["ts >= ?"]
    params: list[Any] = [since]
    if until is not None:
        clauses.append("ts < ?")
        params.append(until)
    if workspace is not None:
        clauses.append("COALESCE(workspace, 'default') = ?")
        params.append(workspace)
    return "WHERE " + " AND ".join(clauses), params


class SpendReader(Protocol):
    """The reports the server reads (`GET /v1/costs`, the dashboard), whichever ledger is
    configured: `LocalSpend` over the SQLite file, `PostgresSpendReport` over Postgres."""

    async def totals(
        self, by: str, since: float, until: float | None = None, workspace: str | None = None
    ) -> list[dict[str, Any]]: ...

    async def series(
        self,
        by: str,
        since: float,
        until: float | None = None,
        workspace: str | None = None,
        bucket: str = "hour",
    ) -> list[dict[str, Any]]: ...

    async def failovers(self, since: float, limit: int = 20) -> list[dict[str, Any]]: ...

    async def aclose(self) -> None: ...


class LocalSpend:
    """`SpendReport` (the SQLite file) as a `SpendReader`; its reads are quick local
    queries, run in place as before."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.report = SpendReport(path)

    async def totals(
        self, by: str, since: float, until: float | None = None, workspace: str | None = None
    ) -> list[dict[str, Any]]:
        return self.report.totals(by, since, until, workspace)

    async def series(
        self,
        by: str,
        since: float,
        until: float | None = None,
        workspace: str | None = None,
        bucket: str = "hour",
    ) -> list[dict[str, Any]]:
        return self.report.series(by, since, until, workspace, bucket)

    async def failovers(self, since: float, limit: int = 20) -> list[dict[str, Any]]:
        return self.report.failovers(since, limit)

    async def aclose(self) -> None:
        self.report.close()

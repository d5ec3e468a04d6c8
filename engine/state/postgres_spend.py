"""Spend reports over the shared Postgres ledger: what `GET /v1/costs`, the dashboard and
`python -m engine costs` read when the ledger is on Postgres, so every replica's calls
show, not one host's.

The same reports as the SQLite `engine.runtime.spend.SpendReport` (totals by a dimension,
series over time, recent failovers, over any window `[since, until)`, optionally one
workspace) with the same figures, in Postgres' dialect. The pool opens on first use, so a
server starts while Postgres is still coming up.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from engine.state.postgres_ledger import TABLE
from engine.state.spend_sql import bucket_width, dimensions, group_column

#: `by` values and the SQL each groups on (never user text in the SQL), as SpendReport's.
DIMENSIONS: dict[str, str] = dimensions(
    "to_char(to_timestamp(ts) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
)
_AGGREGATES = (
    "COUNT(*) AS attempts, "
    "COUNT(*) FILTER (WHERE outcome = 'ok') AS ok, "
    "COUNT(*) FILTER (WHERE cached) AS cached, "
    "COALESCE(SUM(input_tokens), 0)::bigint AS input_tokens, "
    "COALESCE(SUM(output_tokens), 0)::bigint AS output_tokens, "
    "COALESCE(SUM(cache_read_tokens), 0)::bigint AS cache_read_tokens, "
    "COALESCE(SUM(cache_write_tokens), 0)::bigint AS cache_write_tokens, "
    "COALESCE(SUM(reasoning_tokens), 0)::bigint AS reasoning_tokens, "
    "COALESCE(SUM(cost_usd), 0.0) AS cost_usd, "
    "COUNT(*) FILTER (WHERE cost_usd IS NULL AND outcome = 'ok') AS unknown_cost"
)


class PostgresSpendReport:
    """Read-only reports over the Postgres ledger table (asyncpg)."""

    def __init__(self, url: str, table: str = TABLE) -> None:
        self._url = url
        self._table = table
        self._pool: asyncpg.Pool | None = None

    def __repr__(self) -> str:  # never the URL: it may carry a password
        return f"PostgresSpendReport(table={self._table!r})"

    async def _select(self, sql: str, params: list[Any]) -> list[dict[str, Any]]:
        if self._pool is None:
            self._pool = await asyncpg.create_pool(self._url, min_size=0, max_size=2)
        async with self._pool.acquire() as conn:
            if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", self._table):
                return []  # nothing recorded yet: the writer creates the table
            return [dict(r) for r in await conn.fetch(sql, *params)]

    async def totals(
        self, by: str, since: float, until: float | None = None, workspace: str | None = None
    ) -> list[dict[str, Any]]:
        """Per `by` value: attempts, successes, cached, tokens, cost, unknown-cost count."""
        column = group_column(by, DIMENSIONS)
        where, params = _where(since, until, workspace)
        return await self._select(
            f"SELECT {column} AS {by}, {_AGGREGATES} FROM {self._table} {where} "
            "GROUP BY 1 ORDER BY cost_usd DESC, 1",
            params,
        )

    async def series(
        self,
        by: str,
        since: float,
        until: float | None = None,
        workspace: str | None = None,
        bucket: str = "hour",
    ) -> list[dict[str, Any]]:
        """Cost and attempts per time bucket (start as Unix time `t`) and `by` value."""
        column = group_column(by, DIMENSIONS)
        width = bucket_width(bucket)
        where, params = _where(since, until, workspace)
        return await self._select(
            f"SELECT (floor(ts / {width}) * {width})::bigint AS t, {column} AS {by}, "
            "COUNT(*) AS attempts, COALESCE(SUM(cost_usd), 0.0) AS cost_usd "
            f"FROM {self._table} {where} GROUP BY 1, 2 ORDER BY 1, 2",
            params,
        )

    async def failovers(self, since: float, limit: int = 20) -> list[dict[str, Any]]:
        """The latest requests that took more than one attempt, each with its attempts."""
        rows = await self._select(
            "SELECT request_id, ts, provider, model, outcome, fallback_index "
            f"FROM {self._table} WHERE request_id IN (SELECT request_id FROM {self._table} "
            "WHERE ts >= $1 AND request_id != '' GROUP BY request_id "
            "HAVING COUNT(*) > 1 ORDER BY MAX(ts) DESC LIMIT $2) ORDER BY ts",
            [since, limit],
        )
        grouped: dict[str, dict[str, Any]] = {}
        for row in rows:
            entry = grouped.setdefault(row["request_id"], {"request_id": row["request_id"]})
            entry["ts"] = row["ts"]
            entry.setdefault("attempts", []).append(
                {k: row[k] for k in ("provider", "model", "outcome", "fallback_index")}
            )
        return sorted(grouped.values(), key=lambda e: e["ts"], reverse=True)

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


def _where(since: float, until: float | None, workspace: str | None) -> tuple[str, list[Any]]:
    clauses: list[str] = ["ts >= $1"]
    params: list[Any] = [since]
    if until is not None:
        params.append(until)
        clauses.append(f"ts < ${len(params)}")
    if workspace is not None:
        params.append(workspace)
        clauses.append(f"COALESCE(workspace, 'default') = ${len(params)}")
    return "WHERE " + " AND ".join(clauses), params

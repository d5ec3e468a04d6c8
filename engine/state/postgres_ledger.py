"""The cost ledger on Postgres: one table every replica writes, so costs add up across hosts.

Like the SQLite ledger, `record(row)` only appends to a buffer; one writer task per
process sends the buffer in batches with COPY (one round trip per batch), at least every
`flush_interval_s`. The table's columns are derived from `LedgerRow`'s fields, so a field
added there becomes a column here (added to an existing table on start), and the reports
(`totals`, `daily`, `spend_since`) are the same SQL as SQLite's, in Postgres' dialect.

Postgres going away never loses a row and never fails a call: the buffer keeps the rows
and the writer retries with backoff; past `max_buffered` rows it spills them to a local
JSON-lines file (`spill_path`), which is replayed, oldest first, once Postgres answers
again (also at the next start). `dropped` counts only rows that could be written nowhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import asyncpg

from engine.errors import redact
from engine.state.protocols import LedgerRow

log = logging.getLogger(__name__)

TABLE = "engine_attempts"
_TYPES = {
    "float": "double precision NOT NULL",
    "float | None": "double precision",
    "int": "bigint NOT NULL",
    "int | None": "bigint",
    "str": "text NOT NULL",
    "str | None": "text",
    "bool": "boolean NOT NULL",
}
COLUMNS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(LedgerRow))
_SQL_TYPES = {f.name: _TYPES[str(f.type)] for f in dataclasses.fields(LedgerRow)}
_DAY = "to_char(to_timestamp(ts) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
#: Every `*_tokens` field of a row is summed, so a token count added to LedgerRow is
#: reported without touching this module (SUM of bigint is numeric: cast back).
_TOKEN_SUMS = "".join(
    f"COALESCE(SUM({name}), 0)::bigint AS {name}, " for name in COLUMNS if name.endswith("_tokens")
)
_AGGREGATES = (
    "COUNT(*) AS attempts, "
    "COUNT(*) FILTER (WHERE outcome = 'ok') AS ok, "
    "COUNT(*) FILTER (WHERE cached) AS cached, "
    + _TOKEN_SUMS
    + "COALESCE(SUM(cost_usd), 0.0) AS cost_usd, "
    "COUNT(*) FILTER (WHERE cost_usd IS NULL) AS unknown_cost"
)
GROUPS = ("model", "provider", "workspace", "policy", "outcome", "client")


def _schema(table: str) -> list[str]:
    """CREATE for a new table, then ADD COLUMN for fields an older table lacks (nullable:
    rows written before the field existed have no value for it)."""
    columns = ", ".join(f"{name} {_SQL_TYPES[name]}" for name in COLUMNS)
    out = [f"CREATE TABLE IF NOT EXISTS {table} (id bigserial PRIMARY KEY, {columns})"]
    out += [
        f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {name} "
        + _SQL_TYPES[name].replace(" NOT NULL", "")
        for name in COLUMNS
    ]
    out.append(f"CREATE INDEX IF NOT EXISTS {table}_ts ON {table} (ts)")
    out.append(f"CREATE INDEX IF NOT EXISTS {table}_ws ON {table} (workspace, ts)")
    return out


def _record(row: LedgerRow) -> tuple[Any, ...]:
    """A row's values in column order, every text passed through `redact` once more."""
    values = dataclasses.astuple(row)
    return tuple(redact(v) if isinstance(v, str) else v for v in values)


class PostgresLedger:
    """Implements `engine.state.protocols.Ledger` on a Postgres table (asyncpg)."""

    def __init__(
        self,
        url: str,
        *,
        spill_path: str | os.PathLike[str] | None = None,
        batch_size: int = 500,
        flush_interval_s: float = 0.5,
        max_buffered: int = 50_000,
        retry_s: float = 1.0,
        table: str = TABLE,
    ) -> None:
        if not table.isidentifier():  # it is written into SQL, so only a plain name
            raise ValueError(f"not a table name: {table!r}")
        self._table = table
        self._url = url
        self._spill = Path(spill_path) if spill_path is not None else None
        self._batch_size = batch_size
        self._interval = flush_interval_s
        self._max_buffered = max_buffered
        self._retry_s = retry_s
        self._buffer: deque[tuple[Any, ...]] = deque()
        self._pool: asyncpg.Pool | None = None
        self._writer: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False
        self.dropped = 0
        self.spilled = 0

    def __repr__(self) -> str:  # never the URL: it may carry a password
        return f"PostgresLedger(table={self._table!r})"

    async def _connect(self) -> asyncpg.Pool:
        if self._pool is None:
            pool = await asyncpg.create_pool(self._url, min_size=1, max_size=4, timeout=5)
            async with pool.acquire() as conn:
                for statement in _schema(self._table):
                    await conn.execute(statement)
            self._pool = pool
        return self._pool

    # -- writing -------------------------------------------------------------------------

    def record(self, row: LedgerRow) -> None:
        """Buffer the row; the writer task sends it within `flush_interval_s`."""
        if self._closed:
            self.dropped += 1
            return
        self._buffer.append(_record(row))
        self._idle.clear()
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write_loop())
        if len(self._buffer) >= self._batch_size:
            self._wake.set()
        if len(self._buffer) > self._max_buffered:
            self._spill_buffer()

    async def _write_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            try:
                await self._drain()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                log.warning("Postgres ledger unreachable (%s); rows kept", type(exc).__name__)
                await self._reset_pool()
                await asyncio.sleep(self._retry_s)
                continue
            if not self._buffer:
                self._idle.set()
                if self._closed:
                    return

    async def _drain(self) -> None:
        pool = await self._connect()
        await self._replay_spill(pool)
        while self._buffer:
            batch = [self._buffer[i] for i in range(min(self._batch_size, len(self._buffer)))]
            async with pool.acquire() as conn:
                await conn.copy_records_to_table(self._table, records=batch, columns=list(COLUMNS))
            for _ in batch:
                self._buffer.popleft()

    async def _reset_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            with contextlib.suppress(Exception):
                pool.terminate()

    def _spill_buffer(self) -> None:
        """Move the buffer to the local spill file (Postgres has been away too long)."""
        if self._spill is None:
            while len(self._buffer) > self._max_buffered:
                self._buffer.popleft()
                self.dropped += 1
            return
        self._spill.parent.mkdir(parents=True, exist_ok=True)
        with self._spill.open("a", encoding="utf-8") as f:
            while self._buffer:
                f.write(json.dumps(self._buffer.popleft()) + "\n")
                self.spilled += 1

    async def _replay_spill(self, pool: asyncpg.Pool) -> None:
        """Send the spill file's rows (oldest first), then remove it."""
        if self._spill is None or not self._spill.exists():
            return
        rows = [tuple(json.loads(line)) for line in self._spill.read_text("utf-8").splitlines()]
        async with pool.acquire() as conn:
            for i in range(0, len(rows), self._batch_size):
                chunk = rows[i : i + self._batch_size]
                await conn.copy_records_to_table(self._table, records=chunk, columns=list(COLUMNS))
        self._spill.unlink()

    async def flush(self) -> None:
        """Return once every row recorded so far is in Postgres (waits while it is away)."""
        if self._writer is None and self._spill is not None and self._spill.exists():
            self._writer = asyncio.get_running_loop().create_task(self._write_loop())
            self._idle.clear()
        if self._writer is None:
            return
        self._wake.set()
        await self._idle.wait()

    async def aclose(self, timeout_s: float = 10.0) -> None:
        """Flush (up to `timeout_s`; what is left goes to the spill file), then stop."""
        self._closed = True
        if self._writer is not None:
            try:
                await asyncio.wait_for(self.flush(), timeout_s)
            except TimeoutError:
                self._spill_buffer()
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        await self._reset_pool()

    # -- reading -------------------------------------------------------------------------

    async def _select(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        pool = await self._connect()
        async with pool.acquire() as conn:
            return [dict(r) for r in await conn.fetch(sql, *params)]

    async def totals(
        self, workspace: str | None, since: float, by: str
    ) -> Sequence[Mapping[str, Any]]:
        """Per `by` value: attempts, ok, cached, tokens, known cost and unknown-cost rows."""
        if by not in GROUPS:
            raise ValueError(f"cannot group by {by!r}; choose one of {', '.join(GROUPS)}")
        where, params = _where(workspace, since)
        return await self._select(
            f"SELECT {by}, {_AGGREGATES} FROM {self._table} {where} "
            f"GROUP BY {by} ORDER BY cost_usd DESC, {by}",
            *params,
        )

    async def daily(self, workspace: str | None, since: float) -> Sequence[Mapping[str, Any]]:
        """One row per UTC day with the same figures as `totals`."""
        where, params = _where(workspace, since)
        return await self._select(
            f"SELECT {_DAY} AS day, {_AGGREGATES} FROM {self._table} {where} "
            "GROUP BY day ORDER BY day",
            *params,
        )

    async def spend_since(self, since: float) -> list[tuple[str, str, float]]:
        """`(workspace, 'YYYY-MM-DD', usd)` of known costs, for budgets restoring at start."""
        rows = await self._select(
            f"SELECT workspace, {_DAY} AS day, SUM(cost_usd) AS usd FROM {self._table} "
            "WHERE ts >= $1 AND workspace IS NOT NULL AND cost_usd IS NOT NULL "
            "GROUP BY workspace, day ORDER BY workspace, day",
            since,
        )
        return [(r["workspace"], r["day"], float(r["usd"])) for r in rows]


def _where(workspace: str | None, since: float) -> tuple[str, list[Any]]:
    if workspace is None:
        return "WHERE ts >= $1", [since]
    return "WHERE ts >= $1 AND workspace = $2", [since, workspace]

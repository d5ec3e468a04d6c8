"""The cost ledger on Postgres: one table every replica writes, so costs add up across hosts.

Like the SQLite ledger, `record(row)` writes the row to this process's journal
(engine.state.journal: one copy into a shared file mapping, which survives the process
being killed) and appends it to a buffer; one writer task per process sends the buffer
in batches, one round trip each, at least every `flush_interval_s`. The table's columns
are derived from `LedgerRow`'s fields plus `row_id`, so a field added there becomes a
column here (added to an existing table on start), and the reports (`totals`, `daily`,
`spend_since`) are the same SQL as SQLite's, in Postgres' dialect.

Every row carries a unique `row_id` and a write skips ids the table already has, so
sending a row twice (a batch whose commit the connection lost, a journal replayed after a
crash) changes nothing. Postgres going away never loses a row and never fails a call: the
buffer keeps the rows and the writer retries with backoff; past `max_buffered` rows the
buffer lets go of them and they are sent from the journal files once Postgres answers
again. Journals left by processes that died (`kill -9`, or Postgres still away at exit)
are sent at the next start, before the first report or budget restore reads the table.
Without a journal directory (the read-only `engine costs`) nothing is journaled, and rows
past `max_buffered` are dropped and counted in `dropped`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import operator
import os
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import asyncpg

from engine.secrets import redact
from engine.state.journal import Journal, orphans
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
_ARRAYS = {
    "double precision": "float8[]",
    "bigint": "int8[]",
    "text": "text[]",
    "boolean": "bool[]",
}
_FIELDS = tuple(f.name for f in dataclasses.fields(LedgerRow))
COLUMNS: tuple[str, ...] = (*_FIELDS, "row_id")
_SQL_TYPES = {f.name: _TYPES[str(f.type)] for f in dataclasses.fields(LedgerRow)}
_SQL_TYPES["row_id"] = "text"  # NULL for rows written before ids existed
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
_ROW_FIELDS = operator.attrgetter(*_FIELDS)


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
    out.append(f"CREATE UNIQUE INDEX IF NOT EXISTS {table}_row_id ON {table} (row_id)")
    return out


def _insert(table: str) -> str:
    """One statement for a whole batch: a column array each, rows already stored skipped."""
    arrays = ", ".join(
        f"${i}::{_ARRAYS[_SQL_TYPES[name].replace(' NOT NULL', '')]}"
        for i, name in enumerate(COLUMNS, start=1)
    )
    return (
        f"INSERT INTO {table} ({', '.join(COLUMNS)}) SELECT * FROM unnest({arrays}) "
        "ON CONFLICT (row_id) DO NOTHING"
    )


def _record(row: LedgerRow) -> tuple[Any, ...]:
    """A row's values in field order, every text passed through `redact` once more."""
    return tuple(redact(v) if isinstance(v, str) else v for v in _ROW_FIELDS(row))


class PostgresLedger:
    """Implements `engine.state.protocols.Ledger` on a Postgres table (asyncpg)."""

    def __init__(
        self,
        url: str,
        *,
        journal_dir: str | os.PathLike[str] | None = None,
        batch_size: int = 500,
        flush_interval_s: float = 0.5,
        max_buffered: int = 50_000,
        retry_s: float = 1.0,
        table: str = TABLE,
    ) -> None:
        if not table.isidentifier():  # it is written into SQL, so only a plain name
            raise ValueError(f"not a table name: {table!r}")
        self._table = table
        self._insert_sql = _insert(table)
        self._url = url
        self._journal_dir = Path(journal_dir) if journal_dir is not None else None
        self._journal = Journal(self._journal_dir) if self._journal_dir is not None else None
        self._ids = itertools.count(1)  # row ids when there is no journal to number them
        self._id_prefix = f"{os.getpid()}-{os.urandom(6).hex()}."
        self._batch_size = batch_size
        self._interval = flush_interval_s
        self._max_buffered = max_buffered
        self._retry_s = retry_s
        self._buffer: deque[tuple[Any, ...]] = deque()
        self._from_journal = False  # the buffer let rows go: send them from the journal
        self._pool: asyncpg.Pool | None = None
        self._connecting = asyncio.Lock()
        self._writer: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False
        self.dropped = 0
        self.spilled = 0  # rows let go from memory while Postgres was away (in the journal)
        self.replayed = 0  # rows sent from journals that dead processes left

    def __repr__(self) -> str:  # never the URL: it may carry a password
        return f"PostgresLedger(table={self._table!r})"

    async def _connect(self) -> asyncpg.Pool:
        """The pool; on first use the schema, then the journals dead processes left."""
        async with self._connecting:
            if self._pool is None:
                pool = await asyncpg.create_pool(self._url, min_size=1, max_size=4, timeout=5)
                try:
                    async with pool.acquire() as conn, conn.transaction():
                        # One replica at a time: concurrent CREATE TABLE IF NOT EXISTS race
                        # in Postgres (a unique violation on pg_type for the loser).
                        await conn.execute(
                            "SELECT pg_advisory_xact_lock(hashtext($1))", self._table
                        )
                        for statement in _schema(self._table):
                            await conn.execute(statement)
                    await self._replay_orphans(pool)
                except BaseException:
                    pool.terminate()
                    raise
                self._pool = pool
            return self._pool

    # -- writing -------------------------------------------------------------------------

    def record(self, row: LedgerRow) -> None:
        """Journal and buffer the row; the writer task sends it within `flush_interval_s`."""
        if self._closed:
            self.dropped += 1
            return
        self._buffer.append(self._stamp(_record(row)))
        self._idle.clear()
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write_loop())
        if len(self._buffer) >= self._batch_size:
            self._wake.set()
        if len(self._buffer) > self._max_buffered:
            self._let_go()

    def _stamp(self, values: tuple[Any, ...]) -> tuple[Any, ...]:
        """The row with its id: journaled (durable from here), or numbered in memory."""
        if self._journal is not None:
            try:
                return self._journal.append(values)
            except (OSError, TypeError) as exc:  # a full disk must not fail the call
                log.warning("Postgres ledger: row not journaled (%s)", type(exc).__name__)
                return (*values, None)
        return (*values, f"{self._id_prefix}{next(self._ids)}")

    def _let_go(self) -> None:
        """Postgres has been away too long for memory: the journal keeps the rows."""
        if self._journal is None:
            while len(self._buffer) > self._max_buffered:
                self._buffer.popleft()
                self.dropped += 1
            return
        self.spilled += len(self._buffer)
        self._buffer.clear()
        self._from_journal = True

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
            if not self._buffer and not self._from_journal:
                self._idle.set()
                if self._closed:
                    return

    async def _drain(self) -> None:
        pool = await self._connect()
        if self._from_journal:
            await self._send_journal(pool)
        while self._buffer:
            batch = [
                self._buffer.popleft() for _ in range(min(self._batch_size, len(self._buffer)))
            ]
            try:
                await self._send(pool, batch)
            except BaseException:
                if not self._from_journal:  # else the journal sends them
                    self._buffer.extendleft(reversed(batch))
                raise
            self._stored(batch)

    async def _send_journal(self, pool: asyncpg.Pool) -> None:
        """Send every row not yet stored from the journal files (the buffer let them go)."""
        assert self._journal is not None
        self._from_journal = False
        self._buffer.clear()  # every row in it is in the files too
        batch: list[tuple[Any, ...]] = []
        for row in self._journal.pending():
            batch.append(row)
            if len(batch) >= self._batch_size:
                await self._send_stored(pool, batch)
                batch = []
        if batch:
            await self._send_stored(pool, batch)

    async def _send_stored(self, pool: asyncpg.Pool, batch: list[tuple[Any, ...]]) -> None:
        try:
            await self._send(pool, batch)
        except BaseException:
            self._from_journal = True  # what is left is still in the journal
            raise
        self._stored(batch)

    async def _send(self, pool: asyncpg.Pool, rows: Sequence[tuple[Any, ...]]) -> None:
        """One statement per batch; ids already in the table are skipped (idempotent)."""
        columns = [list(column) for column in zip(*rows, strict=True)]
        async with pool.acquire() as conn:
            await conn.execute(self._insert_sql, *columns)

    def _stored(self, batch: Iterable[tuple[Any, ...]]) -> None:
        if self._journal is not None:  # rows the journal could not take were never in it
            self._journal.done(sum(1 for row in batch if row[-1] is not None))

    async def _replay_orphans(self, pool: asyncpg.Pool) -> None:
        """Send the journals of processes that died, then delete them (idempotent: ids)."""
        if self._journal_dir is None:
            return
        for orphan in orphans(self._journal_dir):
            try:
                rows = orphan.rows()
                for i in range(0, len(rows), self._batch_size):
                    await self._send(pool, rows[i : i + self._batch_size])
            except BaseException:
                orphan.release()
                raise
            orphan.remove()
            self.replayed += len(rows)

    async def _reset_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            with contextlib.suppress(Exception):
                pool.terminate()

    async def flush(self) -> None:
        """Return once every row recorded so far is in Postgres (waits while it is away)."""
        if self._writer is None:
            return
        self._wake.set()
        await self._idle.wait()

    async def aclose(self, timeout_s: float = 10.0) -> None:
        """Flush (up to `timeout_s`; what is left stays in the journal for the next start),
        then stop."""
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.flush(), timeout_s)
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        self.dropped += 0 if self._journal is not None else len(self._buffer)
        await self._reset_pool()
        if self._journal is not None:
            self._journal.close()

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

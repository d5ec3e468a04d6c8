"""The cost ledger: every attempt as one SQLite row, written off the hot path.

`record(row)` only puts the row on a thread-safe queue (sub-microsecond, never blocks the
event loop). One daemon writer thread drains the queue and inserts in batches (up to
`batch_size` rows per transaction, at least every `flush_interval_s`), so a burst of
requests costs one fsync, not one each. `flush()` waits until everything recorded so far
is on disk; `aclose()` flushes and stops the writer. A row that cannot be written (a
disk error, a malformed row) is logged and counted in `dropped`, never raised into a
request: the ledger is a record of the traffic, not a gate on it. Durability: a row is
on disk once `flush()` returns; a process killed before that loses at most the last
`flush_interval_s` of rows (see `engine.state.protocols.Ledger`).

A `LedgerRow` has no field that could hold a key or a prompt, and the writer still passes
every text field through `engine.errors.redact` as a second line of defence. The file, its
schema and its read side are engine.state.ledger_file; `NullLedger` records nothing.
"""

from __future__ import annotations

import asyncio
import atexit
import dataclasses
import functools
import logging
import operator
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from engine.clock import Clock
from engine.errors import redact
from engine.state.ledger_file import (
    COLUMNS,
    LedgerQueries,
    connect_reader,
    connect_writer,
    group_column,
)
from engine.state.protocols import LedgerRow

log = logging.getLogger(__name__)

#: Rows per INSERT statement. sqlite3 lets go of the GIL around every statement step, and
#: taking it back means waiting for the event loop's thread to yield it (up to the
#: interpreter's switch interval): with one row per step, a batch of rows stalled the
#: callers' event loop hundreds of times. One step per chunk instead; 58 rows x 17 columns
#: stays within SQLite's oldest limit on bound variables (999).
_CHUNK = 58


@functools.lru_cache(maxsize=_CHUNK)
def _insert_rows(rows: int) -> str:
    """The INSERT statement for `rows` rows at once (kept: sqlite3 caches its compilation)."""
    one = "(" + ", ".join("?" * len(COLUMNS)) + ")"
    return f"INSERT INTO attempts ({', '.join(COLUMNS)}) VALUES " + ", ".join([one] * rows)


_STOP = object()
#: A LedgerRow as queued for the writer: its fields, in order.
_Row = tuple[Any, ...]
_ROW_FIELDS = operator.attrgetter(*(f.name for f in dataclasses.fields(LedgerRow)))


class SQLiteLedger:
    """Implements `engine.state.protocols.Ledger` on one SQLite file in WAL mode.

    The read side is `queries` (synchronous, for code without an event loop); the
    protocol's async reads run it on a worker thread, off the event loop."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        clock: Clock,
        batch_size: int = 256,
        flush_interval_s: float = 0.5,
    ) -> None:
        if batch_size < 1 or flush_interval_s <= 0:
            raise ValueError("batch_size must be >= 1 and flush_interval_s > 0")
        self.path = Path(path)
        self.clock = clock
        self._batch_size = batch_size
        self._interval = flush_interval_s
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._urgent = threading.Event()  # set by flush/close: commit without waiting
        self._closed = False
        self.dropped = 0  # rows the writer could not store (see last_error)
        self.last_error: str | None = None
        writer = connect_writer(self.path)
        self.queries = LedgerQueries(connect_reader(self.path))
        self._thread = threading.Thread(
            target=self._write_loop, args=(writer,), name="engine-ledger", daemon=True
        )
        self._thread.start()
        atexit.register(self.close)  # rows queued by a program that forgot to close

    @property
    def journal_mode(self) -> str:
        """The database's journal mode ('wal' once opened)."""
        return str(self.queries._select("PRAGMA journal_mode", [])[0]["journal_mode"])

    async def totals(
        self, workspace: str | None, since: float, by: str
    ) -> Sequence[Mapping[str, Any]]:
        """`LedgerQueries.totals` (flushed rows), read off the event loop."""
        group_column(by)  # a bad `by` is the caller's error, raised here
        return await asyncio.to_thread(self.queries.totals, workspace, since, by)

    async def daily(self, workspace: str | None, since: float) -> Sequence[Mapping[str, Any]]:
        """`LedgerQueries.daily` (flushed rows), read off the event loop."""
        return await asyncio.to_thread(self.queries.daily, workspace, since)

    async def spend_since(self, since: float) -> list[tuple[str, str, float]]:
        """`LedgerQueries.spend_since` (flushed rows), read off the event loop."""
        return await asyncio.to_thread(self.queries.spend_since, since)

    def count(self) -> int:
        """How many rows are on disk (flushed)."""
        return self.queries.count()

    def record(self, row: LedgerRow) -> None:
        """Queue one attempt; the writer thread inserts it with its batch."""
        if self._closed:  # a late attempt must not fail the request that made it
            log.warning("cost ledger %s is closed; attempt row dropped", self.path)
            return
        # A plain tuple of its fields: the garbage collector stops tracking such tuples at
        # its first look, so rows waiting for their batch never age into (and trigger)
        # full collections under heavy traffic.
        self._queue.put(_ROW_FIELDS(row))

    async def flush(self) -> None:
        """Return once every row recorded before this call is committed."""
        if not self._thread.is_alive():
            return
        done: Future[None] = Future()
        self._queue.put(done)
        self._urgent.set()
        await asyncio.wrap_future(done)

    async def aclose(self) -> None:
        """Flush, stop the writer and close the files. Idempotent."""
        if self._closed:
            return
        await self.flush()
        if self._stop_writer():  # the flush awaited: another closer may have come first
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
            self._close_reader()

    def close(self) -> None:
        """The same as `aclose` for code without an event loop."""
        if self._stop_writer():
            self._thread.join()
            self._close_reader()

    def _stop_writer(self) -> bool:
        """Refuse new rows and tell the writer to stop after the queued ones; False if done."""
        if self._closed:
            return False
        self._closed = True
        atexit.unregister(self.close)
        self._queue.put(_STOP)
        self._urgent.set()
        return True

    def _close_reader(self) -> None:
        self.queries.close()

    def _write_loop(self, conn: sqlite3.Connection) -> None:
        """Drain the queue: batch rows, commit, answer flush markers; stop on _STOP."""
        try:
            while True:
                batch, markers, stop = self._next_batch()
                self._commit(conn, batch, markers)
                if stop:
                    return
        finally:
            conn.close()

    def _next_batch(self) -> tuple[list[_Row], list[Future[None]], bool]:
        batch: list[_Row] = []
        markers: list[Future[None]] = []
        try:
            item = self._queue.get(timeout=self._interval)
        except queue.Empty:
            return batch, markers, False
        # Rows that follow are collected for up to one interval without waking this thread
        # per row (a wake-up and a commit per request would take the GIL, and the disk, on
        # the callers' latency path); flush and close wake it at once through `_urgent`.
        deadline = time.monotonic() + self._interval
        while True:
            if item is _STOP:
                return batch, markers, True
            if isinstance(item, Future):
                markers.append(item)
                return batch, markers, False  # commit now: someone is waiting
            batch.append(item)  # kept as queued: _values reads the tuple as it is
            if len(batch) >= self._batch_size:
                return batch, markers, False
            try:
                item = self._queue.get_nowait()
                continue
            except queue.Empty:
                pass
            remaining = deadline - time.monotonic()
            if remaining > 0:
                self._urgent.wait(remaining)
            self._urgent.clear()
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return batch, markers, False

    def _commit(
        self, conn: sqlite3.Connection, batch: list[_Row], markers: list[Future[None]]
    ) -> None:
        """Write a batch; flush markers always resolve, so a bad row never hangs `flush`."""
        try:
            if batch:
                self._insert(conn, batch)
        finally:
            for marker in markers:
                marker.set_result(None)

    def _insert(self, conn: sqlite3.Connection, batch: list[_Row]) -> None:
        try:
            with conn:
                values = [_values(r) for r in batch]
                for start in range(0, len(values), _CHUNK):
                    chunk = values[start : start + _CHUNK]
                    conn.execute(_insert_rows(len(chunk)), [v for row in chunk for v in row])
            return
        except Exception as exc:  # a bad row or a sick disk: retry one by one below
            if len(batch) == 1:
                self._drop(exc)
                return
        for row in batch:
            self._insert(conn, [row])

    def _drop(self, exc: BaseException) -> None:
        """Losing a ledger row must not fail requests; it is counted and logged instead."""
        self.dropped += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        log.warning("cost ledger %s: row not written: %s", self.path, self.last_error)


def _values(row: _Row) -> tuple[Any, ...]:
    """A queued row's SQL parameters, every text redacted.

    The writer thread runs this for every row while holding the GIL the callers' event
    loop needs, so it works on the queued tuple as it is (no LedgerRow rebuilt) and the
    texts that come from the configuration (a few distinct values) are redacted once each.
    """
    (
        ts,
        workspace,
        policy,
        provider,
        model,
        tin,
        tout,
        cost,
        latency,
        outcome,
        fallback,
        rid,
        cached,
        client,
        cache_read,
        cache_write,
        reasoning,
    ) = row
    return (
        ts,
        None if workspace is None else _redacted(workspace),
        None if policy is None else _redacted(policy),
        _redacted(provider),
        _redacted(model),
        tin,
        tout,
        cost,
        latency,
        _redacted(outcome),
        fallback,
        redact(rid),  # unique per request: nothing to remember
        int(cached),
        None if client is None else _redacted(client),
        cache_read,
        cache_write,
        reasoning,
    )


#: `redact` for the ledger's low-cardinality texts (workspaces, policies, providers,
#: models, outcomes); bounded, so odd traffic cannot grow it.
_redacted = functools.lru_cache(maxsize=4096)(redact)


class NullLedger:
    """A ledger that records nothing: for tests and for users who turn the ledger off."""

    def record(self, row: LedgerRow) -> None:
        """Drop the row."""

    async def flush(self) -> None:
        """Nothing to flush."""

    async def aclose(self) -> None:
        """Nothing to close."""

    async def totals(
        self, workspace: str | None, since: float, by: str
    ) -> Sequence[Mapping[str, Any]]:
        """Always empty."""
        group_column(by)
        return []

    async def daily(self, workspace: str | None, since: float) -> Sequence[Mapping[str, Any]]:
        """Always empty."""
        return []

    async def spend_since(self, since: float) -> list[tuple[str, str, float]]:
        """Always empty."""
        return []

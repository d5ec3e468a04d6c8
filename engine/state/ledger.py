"""The cost ledger: every attempt as one SQLite row, durable before its answer leaves.

`record(row)` writes the row to this process's journal (engine.state.journal: one line
copied into a shared file mapping, about 2 us, which survives the process being killed)
and puts it on a thread-safe queue. One daemon writer thread drains the queue and inserts in
batches (up to `batch_size` rows per transaction, at least every `flush_interval_s`), so
a burst of requests costs one commit, not one each; once a batch is committed the journal
lets go of it. At start the ledger stores the journals that dead processes left (a
`kill -9`, a crash) before anything reads it, so budgets restored at start count every
answered call; each row carries an id (`row_id`), and a replay leaves out the rows
whose id is stored already.
`flush()` waits until everything recorded so far is committed; `aclose()` flushes and
stops the writer. A row that cannot be written (a disk error, a malformed row) is logged
and counted in `dropped`, never raised into a request: the ledger is a record of the
traffic, not a gate on it.

A `LedgerRow` has no field that could hold a key or a prompt, and the writer still passes
every text field through `engine.secrets.redact` as a second line of defence. The file, its
schema and its read side are engine.state.ledger_file; `NullLedger` records nothing.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import logging
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
from engine.secrets import redact
from engine.state.journal import Journal, orphans
from engine.state.ledger_file import (
    COLUMNS,
    LedgerQueries,
    connect_reader,
    connect_writer,
    group_column,
    stored_ids,
)
from engine.state.protocols import LedgerRow

log = logging.getLogger(__name__)


def journal_dir(path: Path) -> Path:
    """Where the ledger at `path` keeps its journals (one directory beside the file)."""
    return path.with_name(path.name + ".journal")


#: Rows per INSERT statement. sqlite3 lets go of the GIL around every statement step, and
#: taking it back means waiting for the event loop's thread to yield it (up to the
#: interpreter's switch interval): with one row per step, a batch of rows stalled the
#: callers' event loop hundreds of times. One step per chunk instead, within SQLite's
#: oldest limit on bound variables (999).
_CHUNK = 999 // len(COLUMNS)


@functools.lru_cache(maxsize=_CHUNK)
def _insert_rows(rows: int) -> str:
    """The INSERT statement for `rows` rows at once (kept: sqlite3 caches its compilation)."""
    one = "(" + ", ".join("?" * len(COLUMNS)) + ")"
    values = ", ".join([one] * rows)
    return f"INSERT INTO attempts ({', '.join(COLUMNS)}) VALUES {values}"


_STOP = object()
#: A LedgerRow as queued for the writer: its fields, in order.
_Row = tuple[Any, ...]


def _unstored(conn: sqlite3.Connection, rows: list[_Row]) -> list[_Row]:
    """A dead process's journaled rows less those already stored (found by id among the
    rows of the span of their times: the same row has the same `ts`)."""
    if not rows:
        return rows
    times = [row[0] for row in rows]
    stored = stored_ids(conn, min(times), max(times))
    return [row for row in rows if row[-1] not in stored]


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
        journal: bool = True,
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
        self.replayed = 0  # rows stored at start from journals that dead processes left
        writer = connect_writer(self.path)
        self._journal: Journal | None = None
        if journal:
            directory = journal_dir(self.path)
            self._replay(writer, directory)  # before any read: budgets restore from it
            self._journal = Journal(directory)
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
        try:
            fields = _values(row)  # redacted before it reaches any file
        except Exception as exc:  # a malformed row: counted, never the call's failure
            self._drop(exc)
            return
        if self._journal is None:
            self._queue.put((*fields, None))
            return
        try:
            self._queue.put(self._journal.append(fields))
        except (OSError, TypeError) as exc:  # a full disk, a malformed row: never the call's
            self.last_error = f"journal: {type(exc).__name__}: {exc}"
            log.warning("cost ledger %s: row not journaled: %s", self.path, self.last_error)
            self._queue.put((*fields, None))

    def _replay(self, conn: sqlite3.Connection, directory: Path) -> None:
        """Store the rows of journals whose process died (idempotent: the rows whose id is
        stored already are left out), then drop them."""
        for orphan in orphans(directory):
            rows, dropped = _unstored(conn, orphan.rows()), self.dropped
            self._insert(conn, rows)
            if self.dropped > dropped:  # kept for a later start (a sick disk, a new schema)
                orphan.release()
                continue
            orphan.remove()
            self.replayed += len(rows)
        if self.replayed:
            log.info("cost ledger %s: %d journaled rows replayed", self.path, self.replayed)

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
            self._close_files()

    def close(self) -> None:
        """The same as `aclose` for code without an event loop."""
        if self._stop_writer():
            self._thread.join()
            self._close_files()

    def _stop_writer(self) -> bool:
        """Refuse new rows and tell the writer to stop after the queued ones; False if done."""
        if self._closed:
            return False
        self._closed = True
        atexit.unregister(self.close)
        self._queue.put(_STOP)
        self._urgent.set()
        return True

    def _close_files(self) -> None:
        self.queries.close()
        if self._journal is not None:
            self._journal.close()

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
            batch.append(item)  # already the row's parameters, id included
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
                if self._journal is not None:  # rows it could not take were never in it
                    self._journal.done(sum(1 for row in batch if row[-1] is not None))
        finally:
            for marker in markers:
                marker.set_result(None)

    def _insert(self, conn: sqlite3.Connection, batch: list[_Row]) -> None:
        try:
            with conn:
                for start in range(0, len(batch), _CHUNK):
                    chunk = batch[start : start + _CHUNK]
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


def _values(row: LedgerRow) -> tuple[Any, ...]:
    """A row's fields as SQL parameters (COLUMNS but the id), every text redacted (before
    the journal sees it).

    `record` runs this for every row on the caller's event loop, so it reads the row's
    slots directly (an attrgetter of its 17 fields cost ~3.5k instructions more) and
    the texts that come from the configuration (a few distinct values) are redacted once
    each.
    """
    workspace, policy, client = row.workspace, row.policy, row.client
    return (
        row.ts,
        None if workspace is None else _redacted(workspace),
        None if policy is None else _redacted(policy),
        _redacted(row.provider),
        _redacted(row.model),
        row.input_tokens,
        row.output_tokens,
        row.cost_usd,
        row.latency_ms,
        _redacted(row.outcome),
        row.fallback_index,
        redact(row.request_id),  # unique per request: nothing to remember
        int(row.cached),
        None if client is None else _redacted(client),
        row.cache_read_tokens,
        row.cache_write_tokens,
        row.reasoning_tokens,
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

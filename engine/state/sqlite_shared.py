"""One SQLite file that several worker processes write, and how transactions get into it.

Why: `serve --workers N` without a state URL keeps budgets and rate limits in files every
worker opens (sqlite_budget.py, sqlite_ratelimit.py); each check-and-book must be one
`BEGIN IMMEDIATE` transaction, which SQLite lets one process at a time through, so no two
workers can take the last slot or the last dollar.

Two costs shaped this. Waiting for another process's lock must never block the event loop,
so that wait happens on a private thread; but most transactions find the file free, and
two hops to a thread and back cost more than the transaction (a budget's reserve + settle
took 431 us of CPU through the thread, 128 us at once). So a transaction first tries the
file on the event loop through a second connection without a busy timeout, and goes to the
thread (which waits up to `BUSY_TIMEOUT_S`) only when another process holds the lock.
And BEGIN IMMEDIATE + COMMIT cost about as much as the statements between them, while
a busy worker's tasks ask for several transactions in one turn of its event loop (the
requests that arrived together all book, the answers that arrived together all settle).
So the first task's body runs at once, and the other tasks' bodies asked for in the same
turn run together in one transaction at the end of the turn, in the order asked,
committed before any caller hears back (group commit). A body that raises without having
written anything (a budget refusal) only fails its own caller; anything else rolls the
whole group back and runs each body alone, so every caller still sees exactly its own
transaction's outcome.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar, cast

T = TypeVar("T")

#: How long a transaction on the private thread waits for another process's write lock.
BUSY_TIMEOUT_S = 30.0

Body = Callable[[sqlite3.Connection], Any]
#: A body's outcome: (True, its result) or (False, the exception it raised).
Outcome = tuple[bool, Any]


class SharedFile:
    """A WAL-mode SQLite file with `schema`, written in transactions (`run`)."""

    def __init__(self, path: Path, schema: str, thread_name: str) -> None:
        self.path = path
        self._conn = self._connect(BUSY_TIMEOUT_S)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript(schema)
        #: The same file for transactions tried on the event loop: no busy timeout, so one
        #: that would have to wait for another process gives up at once (see `_at_once`).
        self._fast = self._connect(0.0)
        self._lock = threading.Lock()  # one transaction at a time in this process
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)
        self._group: list[tuple[Body, asyncio.Future[Any]]] | None = None
        self._first: asyncio.Task[Any] | None = None  # the first task to ask this turn

    def _connect(self, timeout: float) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=timeout, isolation_level=None, check_same_thread=False
        )
        # WAL: a commit appends to the log, no fsync (only checkpoints sync). A process
        # killed after COMMIT keeps the transaction; only a power cut may lose the last ones.
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    async def run(self, body: Callable[[sqlite3.Connection], T]) -> T:
        """Run `body` in a write transaction and return its result once committed.

        The first task to ask in a turn of the event loop runs at once when the file is
        free (no hop); other tasks asking in the same turn wait for its end and run
        together, in the order asked, in one transaction (`_flush`). One task asking
        again in its turn (it had its answer) runs at once too: waiting would group it
        with nothing."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        if self._group is None:
            self._group, self._first = [], task
            loop.call_soon(self._flush)
        if task is self._first:
            outcomes = self._at_once([body])
            if outcomes is not None:
                ok, value = outcomes[0]
                if ok:
                    return cast(T, value)
                raise value
        future: asyncio.Future[T] = loop.create_future()
        self._group.append((body, future))
        return await future

    def _flush(self) -> None:
        group, self._group = [g for g in self._group or () if not g[1].cancelled()], None
        self._first = None
        if not group:
            return
        bodies = [body for body, _ in group]
        outcomes = self._at_once(bodies)
        if outcomes is not None:
            _deliver(group, outcomes)
            return
        waited = asyncio.get_running_loop().run_in_executor(self._thread, self._waiting, bodies)
        waited.add_done_callback(lambda done: _deliver_from(group, done))

    def _at_once(self, bodies: list[Body]) -> list[Outcome] | None:
        """The outcomes when the write lock was free this instant; None, having changed
        nothing, when another process (or this one's thread) held it or the group failed."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            try:
                self._fast.execute("BEGIN IMMEDIATE")
            except sqlite3.Error:  # locked by another process (or broken: the thread's
                return None  # attempt reports that)
            return _group(self._fast, bodies)
        except Exception:
            return None  # rolled back: the thread runs each body alone
        finally:
            self._lock.release()

    def _waiting(self, bodies: list[Body]) -> list[Outcome]:
        """On the private thread: wait for the write lock (other processes wait for us too);
        if the group fails as one, each body alone, so each caller gets its own outcome."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                return _group(self._conn, bodies)
            except Exception as exc:
                if len(bodies) == 1:
                    return [(False, exc)]
        return [self._waiting([body])[0] for body in bodies]

    def break_for_tests(self) -> None:
        """Close both connections, as if the file had gone away: every transaction fails."""
        self._conn.close()
        self._fast.close()

    async def aclose(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self._close)
        self._thread.shutdown(wait=False)

    def _close(self) -> None:
        with self._lock:
            self._fast.close()
            self._conn.close()


def _group(conn: sqlite3.Connection, bodies: list[Body]) -> list[Outcome]:
    """Every body in the transaction begun on `conn`, then COMMIT. A body that raises
    having changed no row fails alone; any other failure rolls back all and re-raises."""
    outcomes: list[Outcome] = []
    try:
        for body in bodies:
            before = conn.total_changes
            try:
                outcomes.append((True, body(conn)))
            except sqlite3.Error:
                raise
            except Exception as exc:
                if conn.total_changes != before:
                    raise
                outcomes.append((False, exc))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return outcomes


def _deliver(group: list[tuple[Body, asyncio.Future[Any]]], outcomes: list[Outcome]) -> None:
    for (_, future), (ok, value) in zip(group, outcomes, strict=True):
        if future.done():  # its caller was cancelled meanwhile
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


def _deliver_from(
    group: list[tuple[Body, asyncio.Future[Any]]], done: asyncio.Future[list[Outcome]]
) -> None:
    """The thread's outcomes, or the one error that kept it from giving any, to every caller."""
    if done.cancelled() or done.exception() is not None:
        error = done.exception() if not done.cancelled() else asyncio.CancelledError()
        _deliver(group, [(False, error)] * len(group))
        return
    _deliver(group, done.result())

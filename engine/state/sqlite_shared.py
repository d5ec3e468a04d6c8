"""One SQLite file that several worker processes write, and how a transaction gets into it.

Why: `serve --workers N` without a state URL keeps budgets and rate limits in files every
worker opens (sqlite_budget.py, sqlite_ratelimit.py); each check-and-book must be one
`BEGIN IMMEDIATE` transaction, which SQLite lets one process at a time through, so no two
workers can take the last slot or the last dollar. Waiting for another process's lock must
never block the event loop, so that wait happens on a private thread; but most transactions
find the file free, and two hops to a thread and back cost more than the transaction itself
(a budget's reserve + settle took 431 us of CPU through the thread, ~150 us at once). So a
transaction first tries the file on the event loop through a second connection without a
busy timeout: if the write lock is free this instant it runs there; if not, it has done
nothing and goes to the thread, which waits for the lock (up to `BUSY_TIMEOUT_S`).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar, cast

T = TypeVar("T")

#: How long a transaction on the private thread waits for another process's write lock.
BUSY_TIMEOUT_S = 30.0


class SharedFile:
    """A WAL-mode SQLite file with `schema`, written one transaction at a time (`run`)."""

    def __init__(self, path: Path, schema: str, thread_name: str) -> None:
        self.path = path
        self._conn = self._connect(BUSY_TIMEOUT_S)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript(schema)
        #: The same file for transactions tried on the event loop: no busy timeout, so one
        #: that would have to wait for another process gives up at once (see `run`).
        self._fast = self._connect(0.0)
        self._lock = threading.Lock()  # one transaction at a time in this process
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)

    def _connect(self, timeout: float) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=timeout, isolation_level=None, check_same_thread=False
        )
        # WAL: a commit appends to the log, no fsync (only checkpoints sync). A process
        # killed after COMMIT keeps the transaction; only a power cut may lose the last ones.
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    async def run(self, body: Callable[[sqlite3.Connection], T]) -> T:
        """Run `body` in one write transaction: at once when the file is free, else on the
        private thread once the other process is done."""
        done, result = self._at_once(body)
        if done:
            return cast(T, result)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._waiting, body)

    def _at_once(self, body: Callable[[sqlite3.Connection], T]) -> tuple[bool, T | None]:
        """(True, result) when the write lock was free this instant; (False, None), having
        changed nothing, when another process (or this one's thread) held it."""
        if not self._lock.acquire(blocking=False):
            return False, None
        try:
            try:
                self._fast.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError:  # locked by another process (or broken: the
                return False, None  # thread's attempt reports that)
            return True, self._commit(self._fast, body)
        finally:
            self._lock.release()

    def _waiting(self, body: Callable[[sqlite3.Connection], T]) -> T:
        """On the private thread: wait for the write lock (other processes wait for us too)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            return self._commit(self._conn, body)

    @staticmethod
    def _commit(conn: sqlite3.Connection, body: Callable[[sqlite3.Connection], T]) -> T:
        """The body of a transaction begun on `conn`, then COMMIT (ROLLBACK if anything fails)."""
        try:
            result = body(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return result

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

"""SharedFile: the transactions of the --workers SQLite state, at once or grouped per loop turn."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.state.sqlite_shared import SharedFile

SCHEMA = "CREATE TABLE IF NOT EXISTS t (name TEXT PRIMARY KEY, n INTEGER NOT NULL);"


def insert(name: str, n: int = 1) -> Callable[[sqlite3.Connection], int]:
    def body(conn: sqlite3.Connection) -> int:
        conn.execute("INSERT INTO t (name, n) VALUES (?, ?)", (name, n))
        return int(conn.execute("SELECT COUNT(*) FROM t").fetchone()[0])

    return body


def rows(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as conn:
        return dict(conn.execute("SELECT name, n FROM t").fetchall())


@pytest.fixture
def shared(tmp_path: Path) -> SharedFile:
    return SharedFile(tmp_path / "s.sqlite3", SCHEMA, "test-sqlite")


async def test_tasks_asking_in_one_turn_share_one_transaction(
    shared: SharedFile, tmp_path: Path
) -> None:
    """Ten tasks asking together: the first runs at once, the nine others in one
    transaction at the end of the turn; each gets its own body's result, all committed."""
    begun: list[str] = []
    shared._fast.set_trace_callback(lambda sql: begun.append(sql) if "BEGIN" in sql else None)
    results = await asyncio.gather(*(shared.run(insert(f"r{i}")) for i in range(10)))
    assert sorted(results) == list(range(1, 11))  # each saw the ones before it
    assert len(begun) == 2
    assert len(rows(tmp_path / "s.sqlite3")) == 10
    await shared.aclose()


async def test_one_task_asking_twice_runs_at_once(shared: SharedFile) -> None:
    """A task's second transaction in the same turn is not held back for a group."""
    begun: list[str] = []
    shared._fast.set_trace_callback(lambda sql: begun.append(sql) if "BEGIN" in sql else None)
    assert await shared.run(insert("a")) == 1
    assert await shared.run(insert("b")) == 2
    assert len(begun) == 2
    await shared.aclose()


async def test_a_refusal_in_a_group_fails_only_its_caller(
    shared: SharedFile, tmp_path: Path
) -> None:
    """A body that raises before writing (a budget refusal) fails alone; the others commit."""

    def refuse(conn: sqlite3.Connection) -> None:
        conn.execute("SELECT COUNT(*) FROM t").fetchone()
        raise ValueError("over budget")

    outcomes = await asyncio.gather(
        shared.run(insert("a")),
        shared.run(insert("b")),
        shared.run(refuse),
        shared.run(insert("c")),
        return_exceptions=True,
    )
    assert isinstance(outcomes[2], ValueError)
    assert sorted(rows(tmp_path / "s.sqlite3")) == ["a", "b", "c"]
    await shared.aclose()


async def test_a_body_failing_after_writing_leaves_nothing_and_spares_the_others(
    shared: SharedFile, tmp_path: Path
) -> None:
    """A body that wrote and then failed is rolled back whole; the rest of its group
    still commits, each body on its own."""

    def half(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t (name, n) VALUES ('half', 1)")
        raise RuntimeError("broke midway")

    outcomes = await asyncio.gather(
        shared.run(insert("a")),
        shared.run(insert("b")),
        shared.run(half),
        shared.run(insert("c")),
        return_exceptions=True,
    )
    assert isinstance(outcomes[2], RuntimeError)
    assert sorted(rows(tmp_path / "s.sqlite3")) == ["a", "b", "c"]
    await shared.aclose()


async def test_a_file_locked_by_another_process_waits_off_the_loop(
    shared: SharedFile, tmp_path: Path
) -> None:
    """While another connection holds the write lock, the group waits on the private
    thread (the event loop keeps running) and commits once the lock is released."""
    other = sqlite3.connect(tmp_path / "s.sqlite3", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    pending = asyncio.gather(*(shared.run(insert(f"r{i}")) for i in range(3)))
    ticks = 0
    while ticks < 5:  # the loop is free while they wait
        await asyncio.sleep(0.01)
        ticks += 1
    assert not pending.done()
    other.execute("COMMIT")
    other.close()
    assert sorted(await pending) == [1, 2, 3]
    await shared.aclose()


async def test_an_unusable_file_fails_every_caller_with_its_error(shared: SharedFile) -> None:
    """Closed connections: each caller gets the sqlite3 error, nobody hangs."""
    shared.break_for_tests()
    outcomes = await asyncio.gather(
        *(shared.run(insert(f"r{i}")) for i in range(3)),
        return_exceptions=True,
    )
    assert all(isinstance(o, sqlite3.Error) for o in outcomes)
    await shared.aclose()

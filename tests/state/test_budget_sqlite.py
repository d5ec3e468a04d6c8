"""SQLiteBudgetStore: the budget protocol in one file that several processes share."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from engine.clock import SystemClock
from engine.errors import BudgetExceededError, RoutingError
from engine.state.ledger import SQLiteLedger
from engine.state.protocols import LedgerRow
from engine.state.sqlite_budget import SQLiteBudgetStore
from engine.testing.clock import FakeClock


async def test_reserve_settle_release(tmp_path: Path, clock: FakeClock) -> None:
    store = SQLiteBudgetStore(tmp_path / "b.sqlite3", clock)
    first = await store.reserve("ws", 0.40, daily_usd=1.0, monthly_usd=10.0)
    assert await store.spent("ws") == {"day": pytest.approx(0.40), "month": pytest.approx(0.40)}
    with pytest.raises(BudgetExceededError, match=r"'ws' daily budget \$1\.0000"):
        await store.reserve("ws", 0.70, daily_usd=1.0, monthly_usd=10.0)
    await store.settle(first, 0.10)
    await store.settle(first, 0.10)  # a second settle is ignored
    await store.release(first)  # and so is a release after it
    assert (await store.spent("ws"))["day"] == pytest.approx(0.10)
    second = await store.reserve("ws", 0.70, daily_usd=1.0, monthly_usd=10.0)
    await store.release(second)
    assert (await store.spent("ws"))["month"] == pytest.approx(0.10)
    assert await store.spent("other") == {"day": 0.0, "month": 0.0}
    await store.aclose()


async def test_two_stores_on_one_file_see_each_other(tmp_path: Path, clock: FakeClock) -> None:
    """Two stores (two processes' worth of connections) share one limit."""
    path = tmp_path / "b.sqlite3"
    a, b = SQLiteBudgetStore(path, clock), SQLiteBudgetStore(path, clock)
    await a.reserve("ws", 0.60, daily_usd=1.0, monthly_usd=None)
    with pytest.raises(BudgetExceededError):
        await b.reserve("ws", 0.60, daily_usd=1.0, monthly_usd=None)
    assert (await b.spent("ws"))["day"] == pytest.approx(0.60)
    await a.aclose()
    await b.aclose()


async def test_concurrent_reservations_never_overspend(tmp_path: Path, clock: FakeClock) -> None:
    """Many tasks over three stores race for one daily limit: the booked sum stays within it.

    Each store has its own connection and database thread, so they contend for SQLite's
    write lock exactly as the stores of separate worker processes do."""
    path = tmp_path / "b.sqlite3"
    stores = [SQLiteBudgetStore(path, clock) for _ in range(3)]
    won: list[float] = []

    async def one(store: SQLiteBudgetStore) -> None:
        try:
            res = await store.reserve("ws", 0.07, daily_usd=1.0, monthly_usd=None)
        except BudgetExceededError:
            return
        won.append(0.07)
        await store.settle(res, 0.07)

    await asyncio.gather(*(one(stores[i % 3]) for i in range(60)))
    assert len(won) == 14  # floor(1.0 / 0.07)
    assert (await stores[0].spent("ws"))["day"] == pytest.approx(0.98)
    with sqlite3.connect(path) as db:  # what every process would read from the file
        (nanos,) = db.execute("SELECT nanos FROM spend WHERE length(period) = 10").fetchone()
    assert nanos == 14 * 70_000_000
    for store in stores:
        await store.aclose()


async def test_a_dead_holders_reservation_expires(tmp_path: Path, clock: FakeClock) -> None:
    store = SQLiteBudgetStore(tmp_path / "b.sqlite3", clock, hold_s=60)
    await store.reserve("ws", 0.90, daily_usd=1.0, monthly_usd=None)  # never settled
    with pytest.raises(BudgetExceededError):
        await store.reserve("ws", 0.50, daily_usd=1.0, monthly_usd=None)
    clock.advance(61)
    assert (await store.spent("ws"))["day"] == 0.0
    await store.reserve("ws", 0.50, daily_usd=1.0, monthly_usd=None)
    await store.aclose()


async def test_seeded_from_the_ledger_once(tmp_path: Path) -> None:
    clock = SystemClock()
    ledger = SQLiteLedger(str(tmp_path / "ledger.sqlite3"), clock)
    row = LedgerRow(clock.time(), "ws", "p", "openai", "openai/m", 1, 1, 0.25, 1.0, "ok", 0, "r")
    ledger.record(row)
    await ledger.flush()
    path = tmp_path / "budgets.sqlite3"
    first = SQLiteBudgetStore(path, clock)
    await first.restore(ledger)
    assert (await first.spent("ws"))["month"] == pytest.approx(0.25)
    second = SQLiteBudgetStore(path, clock)
    await second.restore(ledger)  # another worker starting
    assert (await second.spent("ws"))["month"] == pytest.approx(0.25)  # not counted twice
    await first.aclose()
    await second.aclose()
    await ledger.aclose()


async def test_an_unusable_file_fails_closed(tmp_path: Path, clock: FakeClock) -> None:
    """No budget check, no spending: reserve refuses with a routing error; settle only logs."""
    store = SQLiteBudgetStore(tmp_path / "b.sqlite3", clock)
    held = await store.reserve("ws", 0.1, daily_usd=1.0, monthly_usd=None)
    store._file.break_for_tests()  # as if the file had gone away
    with pytest.raises(RoutingError, match=r"budget store b\.sqlite3 unavailable"):
        await store.reserve("ws", 0.1, daily_usd=1.0, monthly_usd=None)
    await store.settle(held, 0.1)  # logged, not raised: the call's answer is kept
    await store.release(held)

"""The client-key scope of every budget backend: an all-time total beside day and month.

A client key's `budget_usd` is all-time, so the key-scoped stores are built with
`totals=True` (engine/runtime/clients.py); the ledger restores day, month and total per
key id (engine/state/client_spend.py). Run against in-process, SQLite and Redis.
"""

from __future__ import annotations

import calendar
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engine.errors import BudgetExceededError
from engine.state.budget import InProcessBudgetStore
from engine.state.client_spend import ClientSpend
from engine.state.protocols import BudgetStore, LedgerRow
from engine.state.redis_budget import RedisBudgetStore
from engine.state.redis_budget_ahead import BookedAheadBudget
from engine.state.sqlite_budget import SQLiteBudgetStore
from engine.testing.clock import FakeClock
from engine.testing.ledger import CapturingLedger

NOW = float(calendar.timegm((2026, 3, 14, 12, 0, 0, 0, 0, 0)))


@pytest.fixture(params=["in-process", "sqlite", "redis", "redis booked ahead"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BudgetStore]:
    clock = FakeClock(start=NOW)
    made: BudgetStore
    if request.param == "in-process":
        made = InProcessBudgetStore(clock, scope="API key", totals=True)
    elif request.param == "sqlite":
        made = SQLiteBudgetStore(tmp_path / "k.sqlite3", clock, scope="API key", totals=True)
    else:
        url = request.getfixturevalue("redis_srv").url
        prefix = f"keytest-{uuid.uuid4().hex}"  # this test's keys only, on the shared server
        made = RedisBudgetStore(url, prefix=prefix, scope="API key", totals=True)
        if request.param == "redis booked ahead":
            made = BookedAheadBudget(made)
    yield made
    await made.aclose()


async def test_the_total_refuses_past_the_all_time_limit(store: BudgetStore) -> None:
    """Settled spend plus open holds count against total_usd; the refusal names the key."""
    held = await store.reserve("team-a", 0.6, None, None, 1.0)
    await store.settle(held, 0.5)
    await store.reserve("team-a", 0.4, None, None, 1.0)  # 0.5 settled + 0.4 held
    with pytest.raises(BudgetExceededError) as info:
        await store.reserve("team-a", 0.2, None, None, 1.0)
    assert "API key 'team-a' total budget" in str(info.value)
    spent = await store.spent("team-a")
    assert spent["total"] == pytest.approx(0.9)


async def test_a_workspace_store_refuses_a_total_it_cannot_keep(tmp_path: Path) -> None:
    """A store built without totals raises ValueError for total_usd instead of ignoring it."""
    plain = InProcessBudgetStore(FakeClock(start=NOW))
    with pytest.raises(ValueError, match="totals"):
        await plain.reserve("ws", 0.1, None, None, 1.0)


def _row(ts: float, client: str | None, cost: float) -> LedgerRow:
    return LedgerRow(
        ts=ts, workspace="w", policy="p", provider="x", model="x/m", input_tokens=1,
        output_tokens=1, cost_usd=cost, latency_ms=1.0, outcome="ok", fallback_index=0,
        client=client,
    )  # fmt: skip


async def test_restore_from_the_ledger_gives_each_key_its_day_month_and_total(
    store: BudgetStore,
) -> None:
    """Rows of today, earlier this month and last year restore as the key's day, month and
    all-time spend; rows without a key restore nothing."""
    ledger = CapturingLedger()
    for ts, cost in ((NOW, 0.1), (NOW - 5 * 86400, 0.2), (NOW - 365 * 86400, 0.4)):
        ledger.record(_row(ts, "team-a", cost))
    ledger.record(_row(NOW, None, 9.0))
    if isinstance(store, RedisBudgetStore | BookedAheadBudget):  # the Redis server's day: totals
        await store.restore(ClientSpend(ledger, FakeClock(start=NOW)))
        assert (await store.spent("team-a"))["total"] == pytest.approx(0.7)
        return
    await store.restore(ClientSpend(ledger, FakeClock(start=NOW)))
    assert await store.spent("team-a") == {
        "day": pytest.approx(0.1),
        "month": pytest.approx(0.3),
        "total": pytest.approx(0.7),
    }

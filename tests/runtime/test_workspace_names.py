"""However many workspace names clients invent, the budget store gets a bounded number of
them: beyond the limit, new names share one overflow bucket under the same caps."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from engine import Engine
from engine.runtime.workspaces import OVERFLOW, WorkspaceNames
from engine.state.sqlite_budget import SQLiteBudgetStore
from engine.testing.clock import FakeClock

MODELS = {
    "providers": {"mock": {"protocol": "mock"}},
    "models": {
        "mock/paid": {
            "capabilities": ["chat"],
            "input_price": 1.0,
            "output_price": 2.0,
            "context_window": 8000,
        },
    },
}
ROUTE = {"candidates": ["mock/paid"], "budget": {"daily_usd": 1.0}}


def test_names_beyond_the_limit_share_the_overflow_until_the_month_ends() -> None:
    """The first names get buckets of their own; later ones the overflow; a new month
    starts over."""
    clock = FakeClock(start=1_796_000_000.0)
    names = WorkspaceNames(clock, max_names=2)
    assert [names.bucket(n) for n in ("a", "b", "c", "a")] == ["a", "b", OVERFLOW, "a"]
    clock.advance(40 * 86400)
    assert names.bucket("c") == "c" and len(names) == 1


async def test_invented_names_reach_the_store_bounded(tmp_path: Path) -> None:
    """40 invented names with a limit of 5: the SQLite budget file holds at most 6 names
    (5 and the overflow), and each call was still reserved and settled."""
    store = SQLiteBudgetStore(tmp_path / "budgets.sqlite3", FakeClock(start=1_796_000_000.0))
    eng = Engine.from_data(MODELS, {"default": ROUTE}, budget=store)
    eng._svc.names = WorkspaceNames(eng._svc.clock, max_names=5)
    ask = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}
    await asyncio.gather(
        *(eng.arun({**ask, "metadata": {"workspace": f"made-up-{i}"}}) for i in range(40))
    )
    overflow = (await store.spent(OVERFLOW))["day"]
    await eng.aclose()
    with sqlite3.connect(tmp_path / "budgets.sqlite3") as db:
        names = {w for (w,) in db.execute("SELECT DISTINCT workspace FROM spend")}
    assert len(names) == 6 and OVERFLOW in names
    assert overflow > 0

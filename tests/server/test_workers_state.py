"""`serve --workers N`: budgets in one shared file, rate limits in another."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.assemble import Engine, budgets_path, for_workers, limits_path
from engine.server.runner import banner
from engine.server.settings import ServerSettings
from engine.state.budget import InProcessBudgetStore
from engine.state.sqlite_budget import SQLiteBudgetStore
from engine.state.sqlite_ratelimit import SQLiteRateLimiter
from tests.server.realstack import write_config


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ENGINE_LEDGER", str(tmp_path / "state" / "ledger.sqlite3"))
    return write_config(tmp_path / "cfg", "http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1")


async def test_one_worker_keeps_state_in_process(config: Path) -> None:
    engine = for_workers(config, 1)
    assert isinstance(engine, Engine)
    assert isinstance(engine._svc.budget, InProcessBudgetStore)
    await engine.aclose()


async def test_several_workers_share_budgets_and_limits(config: Path, tmp_path: Path) -> None:
    """Two of three workers' engines: a reservation and a lease of one are seen by the other."""
    engines = [for_workers(config, 3) for _ in range(2)]  # two of the three workers
    budgets = [e._svc.budget for e in engines if isinstance(e, Engine)]
    assert all(isinstance(b, SQLiteBudgetStore) for b in budgets)
    assert budgets_path(config) == tmp_path / "state" / "budgets.sqlite3"
    first, second = budgets
    await first.reserve("ws", 0.8, daily_usd=1.0, monthly_usd=None)
    assert (await second.spent("ws"))["day"] == pytest.approx(0.8)  # the other worker sees it
    limiters = [e._svc.limiter for e in engines]
    assert all(isinstance(rl, SQLiteRateLimiter) for rl in limiters)
    assert limits_path(config) == tmp_path / "state" / "limits.sqlite3"
    keys = engines[0].plan.providers["primary"].keys
    await limiters[0].acquire("primary", keys, 10, 5, 0)
    seen = (await limiters[1].status("primary"))["keys"]
    assert seen[keys[0].id]["requests"]["used"] == 1 and seen[keys[0].id]["in_flight"] == 1
    for engine in engines:
        await engine.aclose()
    shown = banner(engines[0].plan, ServerSettings(config_dir=config, workers=3))
    assert "3 workers: budgets shared in" in shown and "limits.sqlite3" in shown

"""Workspace budgets through the engine on every budget backend (in-process, SQLite,
Redis), with two engines sharing one store as two replicas would: concurrent pins in a
listed workspace and in invented names (the `"*"` pool) never spend past the caps."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from engine import Engine
from engine.errors import BudgetExceededError, EngineError
from engine.testing.clock import FakeClock

from .backends import BUDGETS, Scratch

MODELS: dict[str, Any] = {
    "providers": {"mock": {"protocol": "mock"}},
    "models": {
        "mock/paid": {
            "capabilities": ["chat"],
            "input_price": 1.0,
            "output_price": 2.0,
            "context_window": 8000,
        },
    },
    "workspaces": {"team": {"daily_usd": 0.003}, "*": {"daily_usd": 0.003}},
}
ASK = {"messages": [{"role": "user", "content": "hello " * 100}], "max_tokens": 100}


@pytest.fixture(params=sorted(BUDGETS))
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def calls(eng: Engine, workspace: str, n: int) -> list[Any]:
    async def one() -> Any:
        try:
            return await eng.arun({**ASK, "metadata": {"workspace": workspace}}, "mock/paid")
        except EngineError as exc:
            return exc

    return list(await asyncio.gather(*(one() for _ in range(n))))


async def test_replicas_share_the_workspace_and_pool_caps(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Two engines on one store, 30 concurrent pins each in `team` and in 15 invented
    names: each cap ($0.003) answers some calls, refuses the rest, and is never passed."""
    clock = FakeClock(start=1_796_000_000.0)
    stores = BUDGETS[backend](Scratch(tmp_path, clock, request), 2)
    engines = [Engine.from_data(MODELS, {}, budget=s, clock=clock) for s in stores]
    team = await asyncio.gather(*(calls(e, "team", 30) for e in engines))
    made_up = await asyncio.gather(
        *(calls(e, f"made-up-{i}", 2) for e in engines for i in range(15))
    )
    pool = (await engines[1].aspent("made-up-0"))["day"]
    for eng in engines:
        await eng.aclose()  # closes its store too
    for group in ([r for g in team for r in g], [r for g in made_up for r in g]):
        ok = [r for r in group if not isinstance(r, Exception)]
        assert 0 < len(ok) < 60
        assert all(isinstance(r, BudgetExceededError) for r in group if isinstance(r, Exception))
        assert sum(r.cost_usd for r in ok) <= 0.003
    assert 0 < pool <= 0.003

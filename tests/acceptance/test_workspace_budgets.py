"""One budget per workspace, whatever way a call takes: a policy, a `provider/name` pin, a
bare model name, a request fallback, a policy's fallback_policy, a stream or an embedding;
and a budget for the workspaces nobody listed, so inventing a name does not escape it.

Every burst runs concurrently: the caps must hold when calls race, not only one by one.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from engine import Engine
from engine.cli import main
from engine.errors import BudgetExceededError, EngineError
from engine.testing.fakes import FakeOpenAI
from tests.acceptance.conftest import write_config

#: Declared prices (USD per 1M tokens) so the figures do not move with the price package.
PRICED = "    capabilities: [chat, streaming]\n    input_price: 2.5\n    output_price: 10.0\n"


def models_yaml(url: str, workspaces: str = "") -> str:
    return (
        "providers:\n"
        f"  openai: {{protocol: openai, base_url: '{url}', api_key: sk-ws-budget-0001}}\n"
        "models:\n"
        f"  openai/gpt-4o:\n{PRICED}"
        f"  openai/gpt-4o-mini:\n{PRICED}"
        "  openai/text-embedding-3-small:\n"
        "    capabilities: [embeddings]\n    input_price: 0.02\n    output_price: 0.0\n"
        "  openai/unpriced:\n    capabilities: [chat]\n    context_window: 128000\n" + workspaces
    )


CAPPED = "candidates: [openai/gpt-4o]\nbudget: {daily_usd: 0.05}\nretries: {max_retries: 0}\n"
FREE = "candidates: [openai/gpt-4o-mini]\nretries: {max_retries: 0}\n"


def ask(workspace: str, **extra: Any) -> dict[str, Any]:
    """About 400 input tokens and up to 1,000 out: a worst case near $0.011."""
    body = {"messages": [{"role": "user", "content": "hello " * 400}], "max_tokens": 1000}
    return {**body, "metadata": {"workspace": workspace}, **extra}


async def burst(eng: Engine, n: int, body: dict[str, Any], policy: str | None = None) -> list[Any]:
    """`n` identical calls at once; each result is a Response or the error raised."""

    async def one() -> Any:
        try:
            return await eng.arun(body, policy)
        except EngineError as exc:
            return exc

    return list(await asyncio.gather(*(one() for _ in range(n))))


def spent(results: list[Any]) -> float:
    return sum(r.cost_usd or 0.0 for r in results if not isinstance(r, Exception))


def answered(results: list[Any]) -> int:
    return sum(not isinstance(r, Exception) for r in results)


async def spend_cap(eng: Engine, workspace: str, target: str = "capped") -> float:
    """Calls in `workspace`, one after another, until its cap refuses one (what is left is
    less than a call's worst case); what they spent."""
    total = 0.0
    for _ in range(20):
        try:
            total += (await eng.arun(ask(workspace), target)).cost_usd or 0.0
        except BudgetExceededError:
            return total
    raise AssertionError("the cap never refused a call")


@pytest.fixture
async def upstream() -> Any:
    async with FakeOpenAI() as up:
        yield up


def config(tmp_path: Path, url: str, workspaces: str = "") -> Path:
    routes = {
        "capped": CAPPED,
        "free": FREE,
        "handover": CAPPED + "fallback: {policy: free}\n",
    }
    return write_config(tmp_path / "cfg", models_yaml(url, workspaces), routes)


# -- without `workspaces:`, a policy's cap binds every way out of it ---------------------


@pytest.mark.parametrize(
    ("how", "target", "extra"),
    [
        ("pin", "openai/gpt-4o-mini", {}),
        ("bare name", "gpt-4o-mini", {}),
        ("budget-less policy", "free", {}),
        ("request fallback", "capped", {"fallbacks": ["openai/gpt-4o-mini"]}),
        ("fallback_policy", "handover", {}),
    ],
)
async def test_a_spent_cap_holds_whatever_the_call_names(
    tmp_path: Path, upstream: FakeOpenAI, how: str, target: str, extra: dict[str, Any]
) -> None:
    """After the workspace spent the $0.05 a policy allows, a burst of 50 calls that pin a
    model, name it bare, use a budget-less policy or a fallback gets nothing more."""
    eng = Engine.from_config(config(tmp_path, upstream.url))
    before = await spend_cap(eng, "team")
    results = await burst(eng, 50, ask("team", **extra), target)
    await eng.aclose()
    assert answered(results) == 0, how
    assert all(isinstance(r, BudgetExceededError) for r in results), how
    assert before <= 0.05


async def test_pins_from_a_fresh_workspace_stop_at_the_cap(
    tmp_path: Path, upstream: FakeOpenAI
) -> None:
    """100 concurrent pins in a fresh workspace: some answer, the total stays under $0.05."""
    eng = Engine.from_config(config(tmp_path, upstream.url))
    results = await burst(eng, 100, ask("fresh"), "openai/gpt-4o-mini")
    day = (await eng.aspent("fresh"))["day"]
    await eng.aclose()
    assert 0 < answered(results) < 100
    assert spent(results) <= 0.05 and day == pytest.approx(spent(results))


# -- declared workspaces, and the "*" pool for every other name ------------------------

DECLARED = (
    "workspaces:\n"
    "  team: {daily_usd: 0.05}\n"
    "  pennies: {daily_usd: 0.00001}\n"
    '  "*": {daily_usd: 0.03, monthly_usd: 1}\n'
)


async def test_a_listed_workspace_is_capped_for_pins_and_bare_names(
    tmp_path: Path, upstream: FakeOpenAI
) -> None:
    """A listed workspace's own cap binds pins and bare names in one concurrent burst."""
    eng = Engine.from_config(config(tmp_path, upstream.url, DECLARED))
    pins, bare = await asyncio.gather(
        burst(eng, 50, ask("team"), "openai/gpt-4o-mini"), burst(eng, 50, ask("team"), "gpt-4o")
    )
    await eng.aclose()
    assert 0 < answered(pins + bare) < 100
    assert spent(pins + bare) <= 0.05


async def test_invented_workspaces_share_one_pool(tmp_path: Path, upstream: FakeOpenAI) -> None:
    """Ten invented names, 20 concurrent calls each: together they spend at most the `*`
    pool's $0.03, and each name reads the pool's spend."""
    eng = Engine.from_config(config(tmp_path, upstream.url, DECLARED))
    names = [f"made-up-{i}" for i in range(10)]
    bursts = await asyncio.gather(*(burst(eng, 20, ask(n), "free") for n in names))
    results = [r for b in bursts for r in b]
    pool = (await eng.aspent("made-up-3"))["day"]
    team = (await eng.aspent("team"))["day"]
    await eng.aclose()
    assert 0 < answered(results) < 200
    assert spent(results) <= 0.03 and pool == pytest.approx(spent(results))
    assert team == 0.0  # a listed workspace is not in the pool


async def test_the_pool_survives_a_restart(tmp_path: Path, upstream: FakeOpenAI) -> None:
    """The ledger's rows of invented names restore into the pool: a new engine on the same
    ledger refuses another invented name once the pool was spent."""
    cfg = config(tmp_path, upstream.url, DECLARED)
    eng = Engine.from_config(cfg)
    assert 0 < await spend_cap(eng, "alpha", "free") <= 0.03
    await eng.aclose()
    again = Engine.from_config(cfg)
    later = await burst(again, 10, ask("beta"), "openai/gpt-4o-mini")
    await again.aclose()
    assert answered(later) == 0


async def test_streams_and_embeddings_reserve_too(tmp_path: Path, upstream: FakeOpenAI) -> None:
    """Once the workspace spent its cap a stream is refused; an embedding whose worst case
    passes the workspace's cap is refused, and one that fits is booked against it."""
    eng = Engine.from_config(config(tmp_path, upstream.url, DECLARED))
    await spend_cap(eng, "team")
    with pytest.raises(BudgetExceededError):
        async for _ in eng.astream(ask("team", stream=True), "openai/gpt-4o-mini"):
            pass
    body: dict[str, Any] = {"input": ["x " * 2000], "metadata": {"workspace": "pennies"}}
    with pytest.raises(BudgetExceededError):  # ~2,000 tokens: $0.00004 > $0.00001
        await eng.aembed(body, "openai/text-embedding-3-small")
    body["input"] = ["x"]
    small = await eng.aembed(body, "openai/text-embedding-3-small")
    day = (await eng.aspent("pennies"))["day"]
    await eng.aclose()
    assert small.cost_usd and day == pytest.approx(small.cost_usd)  # booked in the workspace


async def test_an_unknown_price_is_refused_under_a_cap(
    tmp_path: Path, upstream: FakeOpenAI
) -> None:
    """A model without a price cannot be shown to fit a workspace cap, so it is refused
    (it would spend an amount nobody counts); without a cap it still answers."""
    eng = Engine.from_config(config(tmp_path, upstream.url, DECLARED))
    with pytest.raises(BudgetExceededError, match="price of openai/unpriced is not known"):
        await eng.arun(ask("team"), "openai/unpriced")
    await eng.aclose()
    open_cfg = write_config(tmp_path / "open", models_yaml(upstream.url), {"free": FREE})
    eng = Engine.from_config(open_cfg)
    resp = await eng.arun(ask("team"), "openai/unpriced")
    await eng.aclose()
    assert resp.cost_usd is None


def test_validate_locates_workspace_budget_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`validate` names the file and line of a contradictory entry, and warns when names
    are listed but no `*` pool covers the rest."""
    bad = 'workspaces:\n  team: {daily_usd: 5, monthly_usd: 1}\n  "*": {}\n'
    cfg = write_config(tmp_path / "bad", models_yaml("http://127.0.0.1:9", bad), {"free": FREE})
    assert main(["validate", str(cfg)]) == 1
    out = capsys.readouterr().out
    models = cfg / "models.yaml"
    assert f"{models}:20:3: workspaces.team: daily_usd 5.0 exceeds monthly_usd 1.0" in out
    assert f'{models}:21:3: workspaces["*"]: a workspace budget needs daily_usd' in out
    only = "workspaces:\n  team: {daily_usd: 5}\n"
    cfg = write_config(tmp_path / "warn", models_yaml("http://127.0.0.1:9", only), {"free": FREE})
    assert main(["validate", str(cfg)]) == 0
    assert (
        f"{cfg / 'models.yaml'}:19:1: workspaces: workspaces not listed" in capsys.readouterr().out
    )

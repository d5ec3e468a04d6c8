"""The state pieces behind a real Engine: budgets survive restarts, limits and costs are seen."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine import Engine
from engine.cli import main
from engine.errors import AllCandidatesFailedError, BudgetExceededError
from engine.state.ledger import NullLedger
from engine.testing.clock import FakeClock

MODELS = """
providers:
  mock:
    protocol: mock
    local: true
    api_key: not-a-real-key
    limits: {LIMITS}
    options: {latency_ms: 0, fail_rate: 0, seed: 1}
models:
  mock/fast:
    capabilities: [chat]
    context_window: 128000
    max_output: 4096
    quality: 0.4
    latency_ms: 5
    input_price: 1000
    output_price: 1000
"""


def config_dir(tmp_path: Path, route: str, limits: str = "{}") -> Path:
    """A config dir with the mock provider (these limits) and one route."""
    (tmp_path / "routes").mkdir()
    (tmp_path / "models.yaml").write_text(MODELS.replace("{LIMITS}", limits))
    (tmp_path / "routes" / "default.yaml").write_text(route)
    return tmp_path


def ask(text: str) -> dict[str, object]:
    """A small request billed to workspace acme."""
    return {
        "messages": [{"role": "user", "content": text}],
        "max_tokens": 5,
        "metadata": {"workspace": "acme"},
    }


@pytest.fixture(autouse=True)
def _no_ledger_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENGINE_LEDGER", raising=False)


async def test_a_restarted_engine_remembers_todays_spend(tmp_path: Path) -> None:
    """Spend recorded by one engine counts against the budget of the next one (via the ledger)."""
    cfg = config_dir(
        tmp_path, "strategy: ordered\ncandidates: [mock/fast]\nbudget: {daily_usd: 0.05}\n"
    )
    clock = FakeClock()
    first = Engine.from_config(cfg, clock=clock)
    answered = 0
    with pytest.raises(BudgetExceededError):
        for i in range(50):
            await first.arun(ask(f"question {i}"))
            answered += 1
    await first.aclose()
    assert answered > 0
    second = Engine.from_config(cfg, clock=clock)
    with pytest.raises(BudgetExceededError, match="'acme' daily budget"):
        await second.arun(ask("one more"))
    await second.aclose()


async def test_configured_rpm_is_enforced_and_reported(tmp_path: Path) -> None:
    """rpm from models.yaml stops the fourth call in a minute without a call; status shows it."""
    route = "strategy: ordered\ncandidates: [mock/fast]\nrate_limit: {on_limited: skip}\n"
    clock = FakeClock()
    eng = Engine.from_config(config_dir(tmp_path, route, "{rpm: 3}"), clock=clock)
    for i in range(3):
        await eng.arun(ask(f"q{i}"))
    with pytest.raises(AllCandidatesFailedError) as err:
        await eng.arun(ask("q3"))
    assert [a.outcome for a in err.value.attempts] == ["rate_limited"]
    status = eng.rate_limit_status("mock")
    assert status["keys"]["mock#0"]["requests"] == {"limit": 3, "remaining": 0, "used": 3}
    assert "not-a-real-key" not in json.dumps(status)
    clock.advance(61)
    await eng.arun(ask("q4"))
    await eng.aclose()


async def test_costs_command_reports_what_the_engine_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The costs command reads the engine's ledger: paid attempts, cache hits and their cost."""
    route = "strategy: ordered\ncandidates: [mock/fast]\ncache: {enabled: true, ttl_s: 300}\n"
    cfg = config_dir(tmp_path, route)
    eng = Engine.from_config(cfg)
    paid = [await eng.arun(ask("first")), await eng.arun(ask("second"))]
    hit = await eng.arun(ask("first"))
    await eng.aclose()
    assert hit.cached and not any(r.cached for r in paid)
    code = main(["costs", "--config", str(cfg), "--workspace", "acme", "--format", "json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    total = report["total"]
    assert (total["attempts"], total["ok"], total["cached"]) == (3, 3, 1)
    expected = sum(r.cost_usd or 0.0 for r in paid)
    assert expected > 0 and total["cost_usd"] == pytest.approx(expected)


async def test_no_ledger_is_written_when_one_is_injected(tmp_path: Path) -> None:
    """Passing NullLedger keeps the config dir free of ledger files."""
    cfg = config_dir(tmp_path, "strategy: ordered\ncandidates: [mock/fast]\n")
    eng = Engine.from_config(cfg, ledger=NullLedger())
    await eng.arun(ask("hello"))
    await eng.aclose()
    assert not (cfg / ".engine").exists()

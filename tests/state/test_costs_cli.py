"""`python -m engine costs`: totals and daily breakdown from the ledger, clear failures."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from engine.cli import main
from engine.state.ledger import SQLiteLedger
from engine.state.protocols import LedgerRow
from engine.testing.clock import FakeClock


def write_ledger(path: Path, rows: list[LedgerRow]) -> None:
    """A ledger file holding exactly these rows, written and closed."""

    async def go() -> None:
        ledger = SQLiteLedger(path, FakeClock())
        for r in rows:
            ledger.record(r)
        await ledger.aclose()

    asyncio.run(go())


def attempt(
    model: str,
    cost: float | None,
    workspace: str = "acme",
    ts: float | None = None,
    cached: bool = False,
) -> LedgerRow:
    # Rows are stamped "now" because the command reports the current UTC day/month.
    return LedgerRow(
        time.time() if ts is None else ts,
        workspace,
        "balanced",
        model.split("/")[0],
        model,
        1000,
        200,
        cost,
        40.0,
        "ok",
        0,
        cached=cached,
    )


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config dir holding a ledger with a few attempts of today."""
    monkeypatch.delenv("ENGINE_LEDGER", raising=False)
    write_ledger(
        tmp_path / ".engine" / "ledger.sqlite3",
        [
            attempt("openai/gpt-4o-mini", 0.0015),
            attempt("openai/gpt-4o-mini", 0.0025),
            attempt("openai/gpt-4o-mini", 0.0, cached=True),
            attempt("anthropic/claude-haiku", 0.0100),
            attempt("custom/unpriced", None),
            attempt("openai/gpt-4o-mini", 9.0, workspace="other"),
            attempt("openai/gpt-4o-mini", 7.0, ts=time.time() - 40 * 86400),
        ],
    )
    return tmp_path


def test_table_shows_totals_by_model_and_daily(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The table lists each model's attempts and cost, a total line and a daily section."""
    code = main(["costs", "--config", str(config), "--workspace", "acme", "--period", "day"])
    out = capsys.readouterr().out
    assert code == 0
    mini = next(line for line in out.splitlines() if line.startswith("openai/gpt-4o-mini"))
    assert mini.split()[1:4] == ["3", "3", "1"] and "0.004000" in mini  # attempts, ok, cached
    total = next(line for line in out.splitlines() if line.startswith("total"))
    assert "0.014000 (+1 unknown)" in total
    assert "Daily" in out and time.strftime("%Y-%m-%d", time.gmtime()) in out
    assert "9.000000" not in out  # another workspace


def test_json_by_provider(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--format json --by provider gives machine-readable totals per provider."""
    argv = ["--workspace", "acme", "--by", "provider", "--format", "json"]
    code = main(["costs", "--config", str(config), *argv])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    costs = {r["provider"]: r["cost_usd"] for r in report["totals"]}
    assert costs == {
        "openai": pytest.approx(0.004),
        "anthropic": pytest.approx(0.01),
        "custom": 0.0,
    }
    assert report["total"]["unknown_cost"] == 1 and report["total"]["attempts"] == 5
    assert report["total"]["cached"] == 1
    assert len(report["daily"]) == 1


def test_all_workspaces_when_none_given(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --workspace the totals cover every workspace."""
    assert main(["costs", "--config", str(config), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["total"]["attempts"] == 6


def test_ledger_path_from_flag_and_env(
    config: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--ledger and $ENGINE_LEDGER both point the command at a ledger file."""
    ledger = str(config / ".engine" / "ledger.sqlite3")
    assert main(["costs", "--ledger", ledger, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["total"]["attempts"] == 6
    monkeypatch.setenv("ENGINE_LEDGER", ledger)
    assert main(["costs", "--config", str(tmp_path / "nowhere"), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["ledger"] == ledger


def test_empty_period_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A ledger with nothing this period prints a clear line and exits 0."""
    path = tmp_path / "ledger.sqlite3"
    write_ledger(path, [])
    assert main(["costs", "--ledger", str(path)]) == 0
    assert "no attempts recorded" in capsys.readouterr().out


def test_missing_ledger_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No ledger file: exit 1 with the path and a hint, no traceback, no file created."""
    path = tmp_path / "nope.sqlite3"
    assert main(["costs", "--ledger", str(path)]) == 1
    err = capsys.readouterr().err
    assert str(path) in err and "no cost ledger" in err and "Traceback" not in err
    assert not path.exists()


def test_foreign_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A file that is not a ledger: exit 1 saying so."""
    path = tmp_path / "notes.txt"
    path.write_text("just text")
    assert main(["costs", "--ledger", str(path)]) == 1
    assert "not a cost ledger" in capsys.readouterr().err


def test_bad_arguments_are_usage_errors(config: Path) -> None:
    """An unknown period or grouping exits 2, as usage errors do."""
    assert main(["costs", "--config", str(config), "--period", "year"]) == 2
    assert main(["costs", "--config", str(config), "--by", "prompt"]) == 2

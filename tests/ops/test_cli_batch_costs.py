"""`python -m engine batch` and `python -m engine costs --days/--since/--until/--format csv`,
run as the real CLI process against fake upstreams on loopback."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import os
import sqlite3
import sys
from pathlib import Path

import pytest

from engine.testing.fakes import FakeOpenAI
from tests.ops.conftest import MSG, ROOT
from tests.server.realstack import write_config


async def cli(*argv: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "engine", *argv, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode(), err.decode()


def _lines(*entries: object) -> str:
    return "".join((e if isinstance(e, str) else json.dumps(e)) + "\n" for e in entries)


async def test_batch_keeps_errors_as_values_and_a_rerun_skips_answered_lines(
    tmp_path: Path,
) -> None:
    """Bad lines become error results; the second run redoes only them; output in order."""
    async with FakeOpenAI() as up:
        config = write_config(tmp_path / "cfg", up.url, up.url)
        env = {**os.environ, "ENGINE_LEDGER": str(tmp_path / "ledger.sqlite3")}
        requests = tmp_path / "requests.jsonl"
        out = tmp_path / "results.jsonl"
        good = [{"custom_id": f"q{i}", "messages": MSG} for i in range(4)]
        requests.write_text(
            _lines(good[0], good[1], "{not json", good[2], {"model": "nope/x", "messages": MSG})
            + "\n"  # a blank line is no request
            + _lines(good[3])
        )
        argv = ["batch", str(requests), "--policy", "chat", "--concurrency", "3"]
        argv += ["--out", str(out), "--config", str(config)]
        code, _, err = await cli(*argv, env=env)
        first = [json.loads(x) for x in out.read_text().splitlines()]
        assert code == 1, err
        assert [r["line"] for r in first] == [1, 2, 3, 4, 5, 7]
        assert [r["ok"] for r in first] == [True, True, False, True, False, True]
        assert [r["custom_id"] for r in first if r["ok"]] == ["q0", "q1", "q2", "q3"]
        assert first[2]["error"]["type"] == "JSONDecodeError"
        assert "nope/x" in first[4]["error"]["message"]
        assert first[0]["response"]["choices"][0]["message"]["content"]
        assert first[0]["provider"] == "primary" and first[0]["cost_usd"] > 0
        assert "6/6" in err and "4 answered, 2 failed" in err
        assert len(up.requests) == 4

        lines = requests.read_text().splitlines()
        lines[2] = json.dumps({"custom_id": "fixed", "messages": MSG})
        lines[4] = json.dumps({"model": "primary/gpt-4o-mini", "messages": MSG})
        requests.write_text("\n".join(lines) + "\n")
        code, _, err = await cli(*argv, env=env)
        second = [json.loads(x) for x in out.read_text().splitlines()]
    assert code == 0, err
    assert "4 lines already answered" in err and "2/2" in err
    assert len(up.requests) == 6  # only the two redone lines reached the upstream
    assert [r["line"] for r in second] == [1, 2, 3, 4, 5, 7]
    assert all(r["ok"] for r in second) and second[2]["custom_id"] == "fixed"
    assert second[0] == first[0]  # answered lines are kept as they were


async def test_batch_usage_errors_exit_2(tmp_path: Path) -> None:
    """A missing input file or a bad --concurrency is a usage error, not a traceback."""
    env = dict(os.environ)
    code, _, err = await cli("batch", str(tmp_path / "none.jsonl"), "--out", "x", env=env)
    assert code == 2 and "cannot read" in err and "Traceback" not in err
    code, _, err = await cli("batch", "r.jsonl", "--out", "x", "--concurrency", "0", env=env)
    assert code == 2 and "concurrency" in err


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    """A ledger with attempts today (two providers, two workspaces) and 40 days ago."""
    from engine.clock import SystemClock
    from engine.state.ledger import SQLiteLedger
    from engine.state.protocols import LedgerRow

    path = tmp_path / "ledger.sqlite3"
    now = dt.datetime.now(dt.UTC).timestamp()
    rows = [
        ("a", "openai", 0.25, now),
        ("a", "anthropic", 0.5, now),
        ("b", "openai", 1.0, now - 3600 * 0),
        ("a", "openai", 8.0, now - 40 * 86400),
    ]
    store = SQLiteLedger(str(path), SystemClock())
    for ws, provider, cost, ts in rows:
        store.record(
            LedgerRow(ts, ws, "p", provider, f"{provider}/m", 10, 5, cost, 1.0, "ok", 0, "r")
        )
    store.close()
    return path


async def test_costs_days_since_until_and_csv(ledger: Path) -> None:
    """--days, --since/--until and --format csv select and print the right rows."""
    env = dict(os.environ)
    base = ["costs", "--ledger", str(ledger)]
    code, out, err = await cli(*base, "--days", "1", "--by", "provider", "--format", "csv", env=env)
    assert code == 0, err
    table = {r["provider"]: r for r in csv.DictReader(io.StringIO(out))}
    assert {p: float(r["cost_usd"]) for p, r in table.items()} == {"openai": 1.25, "anthropic": 0.5}
    assert table["openai"]["attempts"] == "2"

    code, out, _ = await cli(*base, "--days", "60", "--format", "json", env=env)
    assert code == 0 and json.loads(out)["total"]["cost_usd"] == pytest.approx(9.75)

    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=40)
    since, until = old.date().isoformat(), (old + dt.timedelta(days=1)).date().isoformat()
    code, out, _ = await cli(
        *base, "--since", since, "--until", until, "--by", "workspace", "--format", "json", env=env
    )
    report = json.loads(out)
    assert [(r["workspace"], r["cost_usd"]) for r in report["totals"]] == [("a", 8.0)]
    assert report["since"] == since and report["until"] == until

    code, out, _ = await cli(*base, "--days", "7", "--workspace", "b", env=env)
    assert code == 0 and "the last 7 days" in out and "1.000000" in out

    for bad in (["--days", "0"], ["--since", "last week"], ["--days", "2", "--period", "day"]):
        code, _, err = await cli(*base, *bad, env=env)
        assert code == 2 and "Traceback" not in err, bad


def test_ledger_rows_have_no_client_column_yet_still_read(tmp_path: Path) -> None:
    """A ledger written before the `client` column existed is migrated on open."""
    from engine.clock import SystemClock
    from engine.state.ledger import SQLiteLedger

    path = tmp_path / "old.sqlite3"
    SQLiteLedger(str(path), SystemClock()).close()
    with sqlite3.connect(path) as db:
        db.execute("ALTER TABLE attempts DROP COLUMN client")
        db.execute("PRAGMA user_version = 1")  # as a ledger from before the column existed
    SQLiteLedger(str(path), SystemClock()).close()
    with sqlite3.connect(path) as db:
        columns = {row[1] for row in db.execute("PRAGMA table_info(attempts)")}
    assert "client" in columns

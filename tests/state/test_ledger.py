"""SQLiteLedger: round trip, batching off the hot path, flush on close, WAL, no secrets."""

from __future__ import annotations

import calendar
import dataclasses
import logging
import sqlite3
import subprocess
import sys
from dataclasses import astuple
from pathlib import Path

import pytest

from engine.assemble import default_ledger_path
from engine.errors import ConfigError
from engine.state.ledger import NullLedger, SQLiteLedger
from engine.state.ledger_file import open_ledger
from engine.state.protocols import LedgerRow
from engine.testing.clock import FakeClock

DAY1 = float(calendar.timegm((2026, 3, 14, 10, 0, 0, 0, 0, 0)))
DAY2 = DAY1 + 86400


def row(
    ts: float = DAY1,
    model: str = "openai/gpt-4o-mini",
    cost: float | None = 0.001,
    workspace: str | None = "acme",
    outcome: str = "ok",
    request_id: str = "",
) -> LedgerRow:
    """One attempt row; only the fields a test varies are parameters."""
    provider = model.split("/")[0]
    return LedgerRow(
        ts, workspace, "balanced", provider, model, 100, 20, cost, 12.5, outcome, 0, request_id
    )


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """Where a config dir's ledger lives; the directories do not exist yet."""
    return tmp_path / "cfg" / ".engine" / "ledger.sqlite3"


async def test_rows_round_trip_into_totals(path: Path, clock: FakeClock) -> None:
    """Recorded attempts come back summed per model and per provider."""
    ledger = SQLiteLedger(path, clock)
    ledger.record(row(model="openai/gpt-4o-mini", cost=0.001))
    ledger.record(row(model="openai/gpt-4o-mini", cost=0.002, outcome="rate_limited"))
    ledger.record(row(model="anthropic/claude-haiku", cost=0.004))
    await ledger.flush()
    by_model = {r["model"]: r for r in await ledger.totals("acme", 0, "model")}
    assert by_model["openai/gpt-4o-mini"]["attempts"] == 2
    assert by_model["openai/gpt-4o-mini"]["ok"] == 1
    assert by_model["openai/gpt-4o-mini"]["cost_usd"] == pytest.approx(0.003)
    assert by_model["openai/gpt-4o-mini"]["input_tokens"] == 200
    by_provider = {r["provider"]: r["cost_usd"] for r in await ledger.totals(None, 0, "provider")}
    assert by_provider == {"openai": pytest.approx(0.003), "anthropic": pytest.approx(0.004)}
    await ledger.aclose()


async def test_totals_filter_by_workspace_and_time(path: Path, clock: FakeClock) -> None:
    """totals counts only the asked workspace and rows at or after `since`."""
    ledger = SQLiteLedger(path, clock)
    ledger.record(row(ts=DAY1, workspace="acme"))
    ledger.record(row(ts=DAY2, workspace="acme"))
    ledger.record(row(ts=DAY2, workspace="other"))
    await ledger.flush()
    assert (await ledger.totals("acme", DAY2, "model"))[0]["attempts"] == 1
    assert (await ledger.totals(None, DAY2, "model"))[0]["attempts"] == 2
    assert await ledger.totals("nobody", 0, "model") == []
    await ledger.aclose()


async def test_daily_breakdown_is_per_utc_day(path: Path, clock: FakeClock) -> None:
    """The daily breakdown has one row per UTC day, in order."""
    ledger = SQLiteLedger(path, clock)
    for ts in (DAY1, DAY1 + 60, DAY2):
        ledger.record(row(ts=ts, cost=0.5))
    await ledger.flush()
    days = [(d["day"], d["attempts"], d["cost_usd"]) for d in await ledger.daily("acme", 0)]
    assert days == [("2026-03-14", 2, 1.0), ("2026-03-15", 1, 0.5)]
    await ledger.aclose()


async def test_unknown_cost_is_null_never_zero(path: Path, clock: FakeClock) -> None:
    """An attempt of unknown cost is stored as NULL and counted as unknown in totals."""
    ledger = SQLiteLedger(path, clock)
    ledger.record(row(cost=None))
    ledger.record(row(cost=0.25))
    await ledger.aclose()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT COUNT(*) FROM attempts WHERE cost_usd IS NULL").fetchone() == (1,)
    totals = open_ledger(path).totals("acme", 0, "model")[0]
    assert totals["unknown_cost"] == 1 and totals["cost_usd"] == pytest.approx(0.25)


async def test_close_flushes_queued_rows(path: Path, clock: FakeClock) -> None:
    """Rows recorded right before aclose() are on disk afterwards, without an explicit flush."""
    ledger = SQLiteLedger(path, clock, batch_size=3, flush_interval_s=3600)
    for i in range(10):
        ledger.record(row(request_id=f"r{i}"))
    await ledger.aclose()
    assert open_ledger(path).count() == 10


def test_sync_close_flushes_too(path: Path, clock: FakeClock) -> None:
    """close() (for code without a loop) also writes every queued row."""
    ledger = SQLiteLedger(path, clock, flush_interval_s=3600)
    ledger.record(row())
    ledger.close()
    ledger.close()
    assert open_ledger(path).count() == 1


async def test_batches_larger_than_batch_size_are_all_written(path: Path, clock: FakeClock) -> None:
    """More rows than one batch holds are split into batches and none is lost."""
    ledger = SQLiteLedger(path, clock, batch_size=4)
    for i in range(25):
        ledger.record(row(request_id=f"r{i}"))
    await ledger.flush()
    assert ledger.count() == 25
    await ledger.aclose()


async def test_a_batch_of_many_rows_is_written_whole_and_in_order(
    path: Path, clock: FakeClock
) -> None:
    """A batch spanning several multi-row INSERTs (and a partial last one) keeps every row,
    in the order recorded, with each field where it belongs."""
    ledger = SQLiteLedger(path, clock)
    for i in range(150):
        ledger.record(row(request_id=f"r{i}", cost=i / 1000))
    await ledger.flush()
    with sqlite3.connect(path) as conn:
        got = conn.execute(
            "SELECT request_id, cost_usd, model FROM attempts ORDER BY id"
        ).fetchall()
    assert got == [(f"r{i}", i / 1000, "openai/gpt-4o-mini") for i in range(150)]
    await ledger.aclose()


async def test_record_after_close_is_dropped_with_a_warning(
    path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A late attempt after close never raises into the request; it is logged."""
    ledger = SQLiteLedger(path, clock)
    await ledger.aclose()
    with caplog.at_level(logging.WARNING, logger="engine.state.ledger"):
        ledger.record(row())
    assert "closed" in caplog.text


async def test_database_is_in_wal_mode_and_creates_parents(path: Path, clock: FakeClock) -> None:
    """The ledger creates its directory and runs in WAL mode (readers never block the writer)."""
    assert not path.parent.exists()
    ledger = SQLiteLedger(path, clock)
    assert ledger.journal_mode == "wal"
    await ledger.aclose()
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


async def test_no_key_is_ever_stored(path: Path, clock: FakeClock) -> None:
    """Even a key smuggled into a text field is redacted before it reaches the file."""
    secret = "sk-proj-ABCDEFGHIJKLMNOPQRSTUV"
    ledger = SQLiteLedger(path, clock)
    ledger.record(row(request_id=f"req-{secret}", workspace=f"ws {secret}"))
    journaled = [f for f in path.parent.rglob("*.log") if f.stat().st_size]
    assert journaled  # the row is in the journal before the writer commits it
    for file in journaled:
        assert secret.encode() not in file.read_bytes()
    await ledger.aclose()
    for file in path.parent.rglob("*"):
        assert file.is_dir() or secret.encode() not in file.read_bytes()
    assert "prompt" not in LedgerRow.__dataclass_fields__
    assert not any("key" in name for name in LedgerRow.__dataclass_fields__)


async def test_spend_since_groups_known_costs_by_workspace_and_day(
    path: Path, clock: FakeClock
) -> None:
    """spend_since gives (workspace, day, usd), skipping unknown costs and anonymous rows."""
    ledger = SQLiteLedger(path, clock)
    ledger.record(row(ts=DAY1, cost=0.1))
    ledger.record(row(ts=DAY1 + 5, cost=0.2))
    ledger.record(row(ts=DAY2, cost=None))
    ledger.record(row(ts=DAY2, cost=0.4, workspace=None))
    ledger.record(row(ts=DAY2, cost=0.3, workspace="beta"))
    await ledger.flush()
    spend = await ledger.spend_since(0)
    assert [(w, d) for w, d, _ in spend] == [("acme", "2026-03-14"), ("beta", "2026-03-15")]
    assert spend[0][2] == pytest.approx(0.3)
    await ledger.aclose()


async def test_unknown_grouping_is_a_precise_error(path: Path, clock: FakeClock) -> None:
    """Grouping by a column that does not exist names the valid choices."""
    ledger = SQLiteLedger(path, clock)
    with pytest.raises(ValueError, match="choose one of model, provider"):
        await ledger.totals(None, 0, "prompt")
    await ledger.aclose()


def test_default_path_is_under_config_dir_unless_env_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ledger lives in <config>/.engine/ledger.sqlite3; $ENGINE_LEDGER overrides it."""
    monkeypatch.delenv("ENGINE_LEDGER", raising=False)
    assert default_ledger_path(tmp_path) == tmp_path / ".engine" / "ledger.sqlite3"
    monkeypatch.setenv("ENGINE_LEDGER", str(tmp_path / "elsewhere.db"))
    assert default_ledger_path(tmp_path) == tmp_path / "elsewhere.db"


def test_open_ledger_refuses_missing_and_foreign_files(tmp_path: Path) -> None:
    """Opening for reading never creates a file and tells a ledger from other files."""
    with pytest.raises(ConfigError, match="no cost ledger at this path"):
        open_ledger(tmp_path / "missing.sqlite3")
    assert not (tmp_path / "missing.sqlite3").exists()
    text = tmp_path / "notes.txt"
    text.write_text("hello, not a database at all")
    with pytest.raises(ConfigError, match="not a cost ledger"):
        open_ledger(text)
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(ConfigError, match="not a cost ledger"):
        open_ledger(other)


async def test_null_ledger_records_nothing() -> None:
    """NullLedger accepts rows and reports nothing, for tests and a disabled ledger."""
    ledger = NullLedger()
    ledger.record(row())
    await ledger.flush()
    await ledger.aclose()
    assert await ledger.totals(None, 0, "model") == [] and await ledger.spend_since(0) == []


async def test_unwritable_row_is_dropped_and_counted_not_raised(
    path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A malformed row is logged and counted; the rows around it are still written."""
    ledger = SQLiteLedger(path, clock)
    bad = LedgerRow(DAY1, "acme", "p", "x", "x/y", object(), 0, None, 1.0, "ok", 0)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="engine.state.ledger"):
        ledger.record(row(request_id="before"))
        ledger.record(bad)
        ledger.record(row(request_id="after"))
        await ledger.flush()
    assert ledger.count() == 2 and ledger.dropped == 1
    assert "row not written" in caplog.text and ledger.last_error is not None
    await ledger.aclose()


def test_rows_are_written_at_exit_when_nobody_closed_the_ledger(path: Path) -> None:
    """A program that records and exits without close() still leaves its rows on disk."""
    script = (
        "import sys\n"
        "from engine.state.ledger import SQLiteLedger\n"
        "from engine.state.protocols import LedgerRow\n"
        "from engine.testing.clock import FakeClock\n"
        "ledger = SQLiteLedger(sys.argv[1], FakeClock(), flush_interval_s=3600)\n"
        "for i in range(7):\n"
        "    ledger.record(LedgerRow(1.0, 'w', None, 'p', 'p/m', 1, 1, None, 1.0, 'ok', 0))\n"
    )
    subprocess.run([sys.executable, "-c", script, str(path)], check=True, timeout=60)
    assert open_ledger(path).count() == 7


async def test_a_version_1_ledger_gains_the_token_breakdown_columns(tmp_path: Path) -> None:
    """A ledger written before cache/reasoning tokens were kept is migrated in place: old
    rows read as 0 of each, new rows keep them, and the read-only view works before too."""
    from engine.state.ledger_file import APPLICATION_ID

    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE attempts (id INTEGER PRIMARY KEY, ts REAL NOT NULL, workspace TEXT, "
        "policy TEXT, provider TEXT NOT NULL, model TEXT NOT NULL, input_tokens INTEGER NOT "
        "NULL, output_tokens INTEGER NOT NULL, cost_usd REAL, latency_ms REAL NOT NULL, "
        "outcome TEXT NOT NULL, fallback_index INTEGER NOT NULL, request_id TEXT NOT NULL, "
        f"cached INTEGER NOT NULL); PRAGMA application_id = {APPLICATION_ID}; "
        "PRAGMA user_version = 1;"
        "INSERT INTO attempts VALUES (1, 10.0, 'w', 'p', 'a', 'a/m', 100, 5, 0.1, 1.0, 'ok', 0, 'r', 0);"
    )
    conn.commit()
    conn.close()
    before = open_ledger(path).totals(None, 0.0, "model")
    assert before[0]["cache_read_tokens"] == 0
    ledger = SQLiteLedger(path, FakeClock())
    ledger.record(
        LedgerRow(
            11.0,
            "w",
            "p",
            "a",
            "a/m",
            900,
            50,
            0.2,
            1.0,
            "ok",
            0,
            "r2",
            cache_read_tokens=800,
            reasoning_tokens=30,
        )
    )
    await ledger.aclose()
    row = open_ledger(path).totals(None, 0.0, "model")[0]
    assert (row["attempts"], row["cache_read_tokens"], row["reasoning_tokens"]) == (2, 800, 30)


async def test_every_field_lands_in_its_own_column(path: Path, clock: FakeClock) -> None:
    """Each LedgerRow field is stored under the column of its name (values all distinct)."""
    ledger = SQLiteLedger(path, clock)
    stored = LedgerRow(DAY1, "ws", "pol", "prov", "prov/m", 11, 12, 0.5, 13.5, "ok", 2, "rid",
                       True, "client-a", 3, 4, 5)  # fmt: skip
    ledger.record(stored)
    await ledger.aclose()
    fields = [f.name for f in dataclasses.fields(LedgerRow)]
    with sqlite3.connect(path) as db:
        got = db.execute(f"SELECT {', '.join(fields)} FROM attempts").fetchone()
    assert got == tuple(int(v) if isinstance(v, bool) else v for v in astuple(stored))

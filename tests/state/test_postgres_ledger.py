"""PostgresLedger against a real Postgres: shared totals, restore figures, nothing lost."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import pytest

from engine.state.postgres_ledger import COLUMNS, TABLE, PostgresLedger
from engine.state.protocols import LedgerRow
from engine.testing.servers import PostgresServer, free_port


def row(
    workspace: str, cost: float | None, *, ts: float | None = None, model: str = "m/a"
) -> LedgerRow:
    return LedgerRow(
        ts=time.time() if ts is None else ts, workspace=workspace, policy="p", provider="m",
        model=model, input_tokens=10, output_tokens=5, cost_usd=cost, latency_ms=1.0,
        outcome="ok", fallback_index=0, request_id="r", client="team-a",
    )  # fmt: skip


@pytest.fixture
async def clean(postgres_srv: PostgresServer) -> str:
    """The server's URL with an empty attempts table."""
    conn = await asyncpg.connect(postgres_srv.url)
    try:
        await conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
    finally:
        await conn.close()
    return postgres_srv.url


async def test_two_replicas_write_one_table(clean: str) -> None:
    """Rows from two ledgers (two replicas) add up in one report, by model and by day."""
    a, b = PostgresLedger(clean), PostgresLedger(clean)
    try:
        for i in range(30):
            (a if i % 2 else b).record(row("acme", 0.01, model="m/a" if i < 20 else "m/b"))
        a.record(row("acme", None))  # an unpriced attempt is counted, never a silent zero
        await a.flush()
        await b.flush()
        totals = {r["model"]: r for r in await b.totals("acme", 0.0, "model")}
        assert totals["m/a"]["attempts"] == 21 and totals["m/a"]["unknown_cost"] == 1
        assert totals["m/a"]["cost_usd"] == pytest.approx(0.20)
        assert totals["m/b"]["cost_usd"] == pytest.approx(0.10)
        (day,) = await a.daily(None, 0.0)
        assert day["attempts"] == 31 and day["cost_usd"] == pytest.approx(0.30)
        by_key = await a.totals(None, 0.0, "client")
        assert by_key[0]["client"] == "team-a"
    finally:
        await a.aclose()
        await b.aclose()


async def test_spend_since_feeds_budget_restore(clean: str) -> None:
    """Known costs per workspace and UTC day, as a budget store restores them."""
    ledger = PostgresLedger(clean)
    try:
        ledger.record(row("acme", 0.25, ts=86400 * 20000 + 10))
        ledger.record(row("acme", 0.5, ts=86400 * 20000 + 20))
        ledger.record(row("beta", 1.0, ts=86400 * 20001))
        await ledger.flush()
        assert await ledger.spend_since(86400 * 20000) == [
            ("acme", "2024-10-04", 0.75),
            ("beta", "2024-10-05", 1.0),
        ]
    finally:
        await ledger.aclose()


async def test_rows_survive_postgres_being_away(clean: str, tmp_path: Path) -> None:
    """With Postgres unreachable the buffer lets rows go past its bound, but the journal
    keeps them: closed while still away, they are sent at the next start, once each."""
    journal = tmp_path / "journal"
    away = PostgresLedger(
        f"postgresql://postgres@127.0.0.1:{free_port()}/postgres",
        journal_dir=journal, max_buffered=5, retry_s=0.05,
    )  # fmt: skip
    for _ in range(12):
        away.record(row("acme", 0.01))
    await away.aclose(timeout_s=0.5)
    assert away.spilled >= 6 and away.dropped == 0
    assert list(journal.glob("*.log"))  # left for the next start
    back = PostgresLedger(clean, journal_dir=journal)
    try:
        (total,) = await back.totals("acme", 0.0, "workspace")
        assert total["attempts"] == 12 and back.replayed == 12
    finally:
        await back.aclose()
    assert not list(journal.glob("*.log")) and not list(journal.glob("*.lock"))


async def test_rows_let_go_in_an_outage_are_sent_from_the_journal_on_recovery(
    postgres_srv: PostgresServer, clean: str, tmp_path: Path
) -> None:
    """Postgres stops mid-traffic: rows past the buffer's bound leave memory; once it is
    back, the same process sends every row from its journal, each exactly once."""
    ledger = PostgresLedger(
        clean, journal_dir=tmp_path / "journal", max_buffered=5, retry_s=0.05,
        flush_interval_s=0.05,
    )  # fmt: skip
    try:
        ledger.record(row("acme", 0.01))
        await ledger.flush()
        postgres_srv.pause()
        for _ in range(20):
            ledger.record(row("acme", 0.01))
            await asyncio.sleep(0.01)
        assert ledger.spilled > 0
        postgres_srv.resume()
        await asyncio.wait_for(ledger.flush(), 60)
        (total,) = await ledger.totals("acme", 0.0, "workspace")
        assert total["attempts"] == 21
        assert total["cost_usd"] == pytest.approx(0.21)
    finally:
        await ledger.aclose()


async def test_a_row_sent_twice_is_stored_once(clean: str, tmp_path: Path) -> None:
    """A batch whose commit the client never heard of is sent again: ids make it harmless."""
    ledger = PostgresLedger(clean, journal_dir=tmp_path / "journal")
    try:
        ledger.record(row("acme", 0.5))
        await ledger.flush()
        pool = await ledger._connect()
        conn = await asyncpg.connect(clean)
        try:
            (stored,) = await conn.fetch(f"SELECT {', '.join(COLUMNS)} FROM {TABLE}")
        finally:
            await conn.close()
        await ledger._send(pool, [tuple(stored)])
        (total,) = await ledger.totals("acme", 0.0, "workspace")
        assert total["attempts"] == 1
    finally:
        await ledger.aclose()


async def test_repr_never_shows_the_url() -> None:
    """The URL may carry a password; the ledger's repr does not show it."""
    ledger = PostgresLedger("postgresql://user:hunter2@db/x")
    assert "hunter2" not in repr(ledger)


async def test_costs_by_key_reads_the_postgres_ledger(clean: str) -> None:
    """`python -m engine costs --by key` over the Postgres ledger totals per client key id
    (it used to refuse: "--by key needs a SQLite ledger")."""
    import json
    import subprocess
    import sys

    ledger = PostgresLedger(clean)
    try:
        for _ in range(3):
            ledger.record(row("acme", 0.5))
        await ledger.flush()
    finally:
        await ledger.aclose()
    argv = [sys.executable, "-m", "engine", "costs", "--ledger", clean, "--by", "key"]
    done = await asyncio.to_thread(
        subprocess.run, [*argv, "--format", "json"], capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    (only,) = json.loads(done.stdout)["totals"]
    assert only["key"] == "team-a" and only["attempts"] == 3
    assert only["cost_usd"] == pytest.approx(1.5)


async def test_replicas_starting_together_create_the_table_once(clean: str) -> None:
    """Eight ledgers (replicas) opening a missing table at once all start: creating the
    schema is serialized (`CREATE ... IF NOT EXISTS` alone races on Postgres' catalog)."""
    ledgers = [PostgresLedger(clean) for _ in range(8)]
    try:
        answers = await asyncio.gather(*(led.totals(None, 0.0, "model") for led in ledgers))
        assert answers == [[]] * 8
    finally:
        for led in ledgers:
            await led.aclose()

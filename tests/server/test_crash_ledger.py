"""`kill -9` under steady traffic loses no answered call, and budgets restore exactly.

A real `python -m engine serve` takes concurrent streaming and non-streaming traffic; once
it has answered a few hundred requests it is killed with SIGKILL while requests are still
arriving. After a restart, every request the client got an answer for is in the ledger
exactly once (the row was journaled before the answer left), rows of requests cut by the
kill are at most the requests that failed, and the workspace spend the restarted server
restored equals the ledger's sum exactly, which covers every answered call. Under
`--workers 2` the workers' shared budget file is the budgets' record instead: it holds
every answered call, plus the holds of calls the kill cut until they expire.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from pathlib import Path

import asyncpg
import httpx
import pytest

from engine import Engine
from engine.state.postgres_ledger import TABLE
from engine.testing.fakes import FakeOpenAI
from engine.testing.servers import PostgresServer
from tests.server.crash_traffic import (
    WORKSPACE,
    Answered,
    server_env,
    started,
    stop,
    traffic_then_kill,
)
from tests.server.realstack import write_config, write_route


def check_rows(answered: Answered, rows: list[tuple[str, float]]) -> float:
    """Every answered id exactly once, costs as announced, extras only from cut requests;
    returns the rows' total cost."""
    seen = Counter(rid for rid, _ in rows)
    missing = [rid for rid in answered.ids if seen[rid] == 0]
    assert not missing, f"{len(missing)} of {len(answered.ids)} answered calls missing"
    assert max(seen.values()) == 1, "a row was written twice"
    cost = dict(rows)
    for rid, usd in answered.costs.items():
        assert cost[rid] == pytest.approx(usd, abs=1e-8)
    assert len(rows) - len(answered.ids) <= answered.failed
    return sum(cost.values())


async def restored_day_spend(url: str) -> float:
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        data = (await http.get("/v1/dashboard")).json()
    return float(data["budgets"]["workspaces"][WORKSPACE]["day_usd"])


@pytest.mark.parametrize("workers", [1, 2])
async def test_kill_9_under_traffic_loses_no_answered_call_sqlite(
    tmp_path: Path, workers: int
) -> None:
    """One process, and `--workers 2` (a journal per worker; every process SIGKILLed)."""
    async with FakeOpenAI() as primary, FakeOpenAI() as backup:
        config = write_config(tmp_path / "cfg", primary.url, backup.url)
        write_route(config, "chat", "budget: {daily_usd: 100}\n")
        ledger = tmp_path / "ledger.sqlite3"
        env = server_env(ENGINE_LEDGER=str(ledger))
        log = tmp_path / "server.log"
        url, proc = await started(config, env, log, "--workers", str(workers))
        try:
            answered = await traffic_then_kill(url, proc, answered_before_kill=300, concurrency=8)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert len(answered.ids) >= 300
        url, proc = await started(config, env, log, "--workers", str(workers))
        try:
            restored = await restored_day_spend(url)
        finally:
            stop(proc)
        with sqlite3.connect(ledger) as db:
            rows = db.execute(
                "SELECT request_id, cost_usd FROM attempts WHERE workspace = ?", (WORKSPACE,)
            ).fetchall()
    total = check_rows(answered, rows)
    if workers == 1:  # the in-process budget restored from the ledger at start
        assert restored == pytest.approx(total, rel=1e-9)
    else:
        # The workers' shared budget file is its own record (settled before each answer
        # left): every answered call, plus, until they expire, the holds of the calls the
        # kill cut (each at most a few times one call's cost).
        assert restored >= total - 1e-12
        assert restored - total <= answered.failed * 5 * max(cost for _, cost in rows)


async def test_kill_9_under_traffic_loses_no_answered_call_postgres(
    tmp_path: Path, postgres_srv: PostgresServer
) -> None:
    """The same over the Postgres ledger. The restarted server sends the dead process's
    journal when its engine first starts (its first call); the workspace spend is then
    read back through a fresh engine over the same config, as a budget restores it."""
    conn = await asyncpg.connect(postgres_srv.url)
    await conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
    async with FakeOpenAI() as primary, FakeOpenAI() as backup:
        config = write_config(tmp_path / "cfg", primary.url, backup.url)
        env = server_env(ENGINE_LEDGER_URL=postgres_srv.url)
        log = tmp_path / "server.log"
        url, proc = await started(config, env, log)
        try:
            answered = await traffic_then_kill(url, proc, answered_before_kill=300, concurrency=8)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert len(answered.ids) >= 300
        url, proc = await started(config, env, log)
        try:
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
                assert (await http.post("/v1/chat/completions", json=body)).status_code == 200
        finally:
            stop(proc)
        try:
            rows = await conn.fetch(
                f"SELECT request_id, cost_usd FROM {TABLE} WHERE workspace = $1", WORKSPACE
            )
        finally:
            await conn.close()
        total = check_rows(answered, [(r["request_id"], r["cost_usd"]) for r in rows])
        engine = Engine.from_config(config, ledger_url=postgres_srv.url)
        try:
            restored = (await engine.aspent(WORKSPACE))["day"]
        finally:
            await engine.aclose()
    assert restored == pytest.approx(total, rel=1e-9)

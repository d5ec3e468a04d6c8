"""Client keys across real replicas, and where a key's id (never its text) is recorded.

Per-key request limits count in Redis when the state is there, so two replicas admit the
key's rpm between them, not each; every ledger row of a call made with a key carries the
key's id, `python -m engine costs --by key` totals it, and no ledger row, metric, log
line or error carries the key's text.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import redis.asyncio as aioredis

from engine.testing.servers import RedisServer
from tests.server.keyservers import ROOT, burst, key_stack

KEY = "sk-team-a-secret-0123456789"
ENV = {"TEAM_A_KEY": KEY}


async def test_rpm_holds_across_two_redis_replicas(tmp_path: Path, redis_srv: RedisServer) -> None:
    """rpm: 5 on a key, 20 concurrent requests spread over two replicas sharing a Redis:
    exactly 5 are served, the rest are 429 key_rate_limited with Retry-After."""
    client = aioredis.Redis.from_url(redis_srv.url)
    await client.flushdb()
    await client.aclose()
    yaml = "api_keys:\n  - id: team-a\n    key_env: TEAM_A_KEY\n    rpm: 5\n"
    env = {**ENV, "ENGINE_STATE_URL": redis_srv.url}
    async with key_stack(tmp_path, yaml, env) as stack:
        urls = [await stack.start(), await stack.start()]
        answers, _ = await burst(urls, KEY, 20, 20)
    statuses = [a.status_code for a in answers]
    assert statuses.count(200) == 5 and statuses.count(429) == 15
    refused = next(a for a in answers if a.status_code == 429)
    assert refused.json()["error"]["code"] == "key_rate_limited"
    assert "retry-after" in refused.headers
    assert len(stack.upstream.requests) == 5


async def test_the_ledger_and_costs_by_key_carry_the_id_never_the_key(tmp_path: Path) -> None:
    """Every ledger row of a keyed call has the key's id as its client; `engine costs --by
    key` totals what the answers cost; the ledger (and every other file the server keeps),
    /metrics and the logs never hold the key's text."""
    yaml = "api_keys:\n  - id: team-a\n    key_env: TEAM_A_KEY\n    budget_usd: 5\n"
    async with key_stack(tmp_path, yaml, ENV) as stack:
        url = await stack.start()
        _, spent = await burst([url], KEY, 12, 4)
        async with httpx.AsyncClient(timeout=10) as http:
            metrics = (await http.get(f"{url}/metrics")).text
        stack.stop(0)
        config = stack.config
        argv = [sys.executable, "-m", "engine", "costs", "--config", str(config)]
        argv += ["--by", "key", "--format", "json"]
        done = subprocess.run(argv, cwd=ROOT, env=stack.env, capture_output=True, timeout=60)
        logs = stack.log_text()
    report = json.loads(done.stdout)
    rows = {r["key"]: r for r in report["totals"]}
    assert set(rows) == {"team-a"}
    assert rows["team-a"]["attempts"] == 12
    assert abs(rows["team-a"]["cost_usd"] - spent) < 1e-9
    ledger = b"".join(
        p.read_bytes() for p in (config / ".engine").glob("ledger.sqlite3*") if p.is_file()
    )
    assert b"team-a" in ledger
    stored = [p.read_bytes() for p in (config / ".engine").rglob("*") if p.is_file()]
    assert not any(KEY.encode() in data for data in stored)  # ledger, journal, budgets
    assert KEY not in metrics and KEY not in logs

"""Three real `engine serve` replicas over one Redis and one Postgres: one truth.

Requests are spread concurrently over the replicas as a load balancer would. A provider
limit of 20 requests a minute lets exactly 20 reach the upstream; a workspace budget is
never overspent; `python -m engine costs` over the shared ledger shows every answered
request exactly once; a replica killed with SIGKILL mid-call gives its reservation back
when the hold expires.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from engine.state.postgres_ledger import TABLE
from engine.testing.fakes import FakeOpenAI, Fault
from engine.testing.servers import PostgresServer, RedisServer, free_port
from tests.server.test_process import _wait_ready

ROOT = Path(__file__).resolve().parents[2]
MODELS = """\
providers:
  primary:
    protocol: openai
    base_url: '{url}'
    api_key: sk-primary-key-0000000
    limits: {{rpm: 20}}
    timeouts: {{total_s: 5}}
models:
  primary/gpt-4o-mini:
    upstream: gpt-4o-mini
    capabilities: [chat, streaming]
    context_window: 128000
    max_output: 1000
    input_price: 1000.0
    output_price: 1000.0
"""
ROUTE = """\
strategy: ordered
candidates: [primary/gpt-4o-mini]
retries: {{max_retries: 0}}
rate_limit: {{on_limited: wait, max_wait_ms: 0}}
budget: {{daily_usd: {daily}}}
"""


@dataclass
class Replicas:
    urls: list[str]
    procs: list[subprocess.Popen[bytes]]
    upstream: FakeOpenAI
    env: dict[str, str]
    config: Path


async def _reset(redis_url: str, pg_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    await client.flushdb()
    await client.aclose()
    conn = await asyncpg.connect(pg_url)
    await conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
    await conn.close()


@pytest.fixture
async def replicas(
    tmp_path: Path,
    redis_srv: RedisServer,
    postgres_srv: PostgresServer,
    request: pytest.FixtureRequest,
) -> AsyncIterator[Replicas]:
    daily = getattr(request, "param", 100.0)
    await _reset(redis_srv.url, postgres_srv.url)
    async with FakeOpenAI() as upstream:
        config = tmp_path / "cfg"
        (config / "routes").mkdir(parents=True)
        (config / "models.yaml").write_text(MODELS.format(url=upstream.url))
        (config / "routes" / "chat.yaml").write_text(ROUTE.format(daily=daily))
        env = {k: v for k, v in os.environ.items() if not k.endswith("_BASE_URL")}
        env |= {
            "ENGINE_STATE_URL": redis_srv.url,
            "ENGINE_LEDGER_URL": postgres_srv.url,
            "ENGINE_HOLD_MARGIN_S": "1",
        }
        procs, urls = [], []
        try:
            for i in range(3):
                port = free_port()
                log = (tmp_path / f"replica{i}.log").open("wb")
                argv = [sys.executable, "-m", "engine", "serve", "--config", str(config)]
                argv += ["--port", str(port)]
                procs.append(subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=log))
                urls.append(f"http://127.0.0.1:{port}")
            for url, proc in zip(urls, procs, strict=True):
                await _wait_ready(url, proc)
            yield Replicas(urls, procs, upstream, env, config)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


async def _ask(http: httpx.AsyncClient, url: str, i: int) -> httpx.Response:
    body = {
        "model": "chat",
        "messages": [{"role": "user", "content": f"question {i}"}],
        "max_tokens": 10,
        "metadata": {"workspace": "acme"},
    }
    return await http.post(f"{url}/v1/chat/completions", json=body)


async def test_a_provider_limit_holds_across_replicas(replicas: Replicas) -> None:
    """60 concurrent requests over 3 replicas against a 20 rpm key: 20 reach the upstream."""
    async with httpx.AsyncClient(timeout=30) as http:
        answers = await asyncio.gather(*(_ask(http, replicas.urls[i % 3], i) for i in range(60)))
    statuses = [a.status_code for a in answers]
    assert statuses.count(200) == 20
    assert len(replicas.upstream.requests) == 20
    assert set(statuses) == {200, 429}


@pytest.mark.parametrize("replicas", [0.1], indirect=True)
async def test_budget_and_ledger_hold_across_replicas(replicas: Replicas) -> None:
    """A workspace budget spread over 3 replicas is never overspent, and `engine costs`
    over the shared Postgres ledger counts every answered request exactly once."""
    async with httpx.AsyncClient(timeout=30) as http:
        answers = []
        for batch in range(3):  # below the rate limit, so only the budget refuses
            answers += await asyncio.gather(
                *(_ask(http, replicas.urls[i % 3], batch * 6 + i) for i in range(6))
            )
    ok = [a for a in answers if a.status_code == 200]
    spent = sum(float(a.headers["x-engine-cost-usd"]) for a in ok)
    assert 0 < len(ok) < len(answers)
    assert spent <= 0.1 + 1e-12
    # Any one replica's GET /v1/costs reads the shared ledger: every replica's answers.
    page = await _costs_until(replicas.urls[0], len(ok))
    (row,) = [r for r in page["rows"] if r["model"] == "primary/gpt-4o-mini"]
    assert row["ok"] == len(ok) and page["total_cost_usd"] == pytest.approx(spent)
    async with httpx.AsyncClient(timeout=30) as http:  # the dashboard reads it too
        board = (await http.get(f"{replicas.urls[1]}/v1/dashboard", params={"hours": 1})).json()
    assert board["total_cost_usd"] == pytest.approx(spent)
    for proc in replicas.procs:  # SIGTERM flushes each replica's ledger buffer
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    tomorrow = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).date().isoformat()
    for extra in ([], ["--by", "key", "--until", tomorrow]):
        costs = subprocess.run(
            [sys.executable, "-m", "engine", "costs", "--config", str(replicas.config),
             "--workspace", "acme", "--format", "json", *extra],
            cwd=ROOT, env=replicas.env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert costs.returncode == 0, costs.stderr
        report = json.loads(costs.stdout)
        assert sum(r["ok"] for r in report["totals"]) == len(ok)
        assert report["total"]["cost_usd"] == pytest.approx(spent)
        assert [d["ok"] for d in report["daily"]] == [len(ok)]


async def _costs_until(url: str, answered: int) -> dict[str, Any]:
    """/v1/costs for workspace acme once it counts `answered` successes (rows reach Postgres
    within the writers' batch interval)."""
    async with httpx.AsyncClient(timeout=30) as http:
        for _ in range(100):
            page: dict[str, Any] = (
                await http.get(f"{url}/v1/costs", params={"workspace": "acme", "by": "model"})
            ).json()
            if sum(r["ok"] for r in page["rows"]) >= answered:
                return page
            await asyncio.sleep(0.1)
    return page


@pytest.mark.parametrize("replicas", [0.03], indirect=True)  # one call's worst case: $0.02
async def test_a_killed_replicas_reservation_returns(replicas: Replicas) -> None:
    """SIGKILL a replica while its call holds most of the budget: the other replicas are
    refused until the hold expires (timeout + margin), then serve again."""
    replicas.upstream.script([Fault(latency=10)])
    async with httpx.AsyncClient(timeout=30) as http:
        stuck = asyncio.create_task(_ask(http, replicas.urls[0], 0))
        await asyncio.sleep(1.0)  # the call is in flight, its worst case held in Redis
        replicas.procs[0].send_signal(signal.SIGKILL)
        refused = await _ask(http, replicas.urls[1], 1)
        await asyncio.sleep(7)  # total_s 5 + margin 1
        served = await _ask(http, replicas.urls[2], 2)
        stuck.cancel()
    assert refused.status_code == 429
    assert served.status_code == 200


def test_server_yaml_names_the_stores_and_never_shows_their_urls(tmp_path: Path) -> None:
    """state_url / ledger_url from server.yaml reach the settings; no URL is printed."""
    from engine.server.settings import load_settings

    (tmp_path / "server.yaml").write_text(
        "state_url: redis://:pw-123@cache:6379/0\nledger_url: postgresql://u:pw-456@db/costs\n"
    )
    settings = load_settings(tmp_path, env={})
    assert settings.state_url == "redis://:pw-123@cache:6379/0"
    assert settings.ledger_url == "postgresql://u:pw-456@db/costs"
    assert "pw-" not in repr(settings)

"""A real `python -m engine serve --workers N` process, without a state URL: the workers
share one window per provider key through the SQLite file beside the ledger, whichever
worker the kernel hands each connection to."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from engine.testing.fakes import FakeOpenAI
from engine.testing.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
MODELS = """\
providers:
  primary:
    protocol: openai
    base_url: '{url}'
    api_key: sk-primary-key-0000000
    limits: {{rpm: {rpm}}}
models:
  primary/gpt-4o-mini:
    upstream: gpt-4o-mini
    capabilities: [chat, streaming]
    context_window: 128000
    max_output: 1000
    input_price: 1.0
    output_price: 2.0
"""
ROUTE = """\
strategy: ordered
candidates: [primary/gpt-4o-mini]
retries: {max_retries: 0}
rate_limit: {on_limited: wait, max_wait_ms: 0}
"""


async def wait_ready(url: str, proc: subprocess.Popen[bytes], within_s: float = 180.0) -> None:
    """Poll /readyz until a worker answers 200. Bounded generously: N workers each import
    the engine, which takes tens of seconds on a loaded 2-core machine."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    async with httpx.AsyncClient(timeout=2) as http:
        while loop.time() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"server exited early with {proc.returncode}")
            try:
                if (await http.get(f"{url}/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("server never became ready")


@dataclass
class Served:
    url: str
    proc: subprocess.Popen[bytes]
    upstream: FakeOpenAI
    state: Path


@pytest.fixture
async def workers(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Served]:
    # `(workers, rpm)`: the limit test needs rpm 20; the scrape test sends until the
    # kernel has spread its connections, which must not run into a limit
    count, rpm = getattr(request, "param", (3, 20))
    async with FakeOpenAI() as upstream:
        config = tmp_path / "cfg"
        (config / "routes").mkdir(parents=True)
        (config / "models.yaml").write_text(MODELS.format(url=upstream.url, rpm=rpm))
        (config / "routes" / "chat.yaml").write_text(ROUTE)
        state = tmp_path / "state"
        env = {k: v for k, v in os.environ.items() if not k.endswith("_BASE_URL")}
        env.pop("ENGINE_STATE_URL", None)
        env.pop("ENGINE_LEDGER_URL", None)
        env |= {"ENGINE_LEDGER": str(state / "ledger.sqlite3")}
        port = free_port()
        argv = [sys.executable, "-m", "engine", "serve", "--config", str(config)]
        argv += ["--port", str(port), "--workers", str(count)]
        with (tmp_path / "server.log").open("wb") as log:
            proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=log)
        url = f"http://127.0.0.1:{port}"
        try:
            await wait_ready(url, proc)
            yield Served(url, proc, upstream, state)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _body(i: int) -> dict[str, object]:
    return {
        "model": "chat",
        "messages": [{"role": "user", "content": f"question {i}"}],
        "max_tokens": 10,
    }


async def test_three_workers_admit_exactly_the_limit_however_connections_spread(
    workers: Served,
) -> None:
    """60 requests against a 20 rpm key through `--workers 3`: 40 on one keep-alive
    connection (one worker gets them all) and 20 on fresh connections (the kernel spreads
    them): exactly 20 are admitted and reach the upstream, the rest are 429."""
    one_connection = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    fresh = httpx.Limits(max_keepalive_connections=0)
    async with (
        httpx.AsyncClient(timeout=30, limits=one_connection) as pinned,
        httpx.AsyncClient(timeout=30, limits=fresh) as spread,
    ):
        answers = await asyncio.gather(
            *(pinned.post(f"{workers.url}/v1/chat/completions", json=_body(i)) for i in range(40)),
            *(spread.post(f"{workers.url}/v1/chat/completions", json=_body(i)) for i in range(20)),
        )
    statuses = [a.status_code for a in answers]
    assert statuses.count(200) == 20, statuses
    assert set(statuses) == {200, 429}
    assert len(workers.upstream.requests) == 20
    assert (workers.state / "limits.sqlite3").exists()


def _requests_in(metrics: str) -> float:
    """The sum of every engine_requests_total series in a Prometheus text."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("engine_requests_total{")
    )


async def _all_workers_up(http: httpx.AsyncClient, url: str, count: int) -> None:
    """Until a /v1/stats answer counts `count` workers (each starts its own engine)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 180
    while loop.time() < deadline:
        server = (await http.get(f"{url}/v1/stats")).json()["server"]
        if server["workers"]["answered"] == count:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("not every worker came up")


@pytest.mark.parametrize("workers", [(2, 100_000)], indirect=True)
async def test_every_scrape_counts_every_workers_requests(workers: Served) -> None:
    """After K requests spread over `--workers 2`, each of several scrapes of /metrics,
    /v1/stats, /v1/health and /v1/dashboard (on fresh connections, so either worker
    answers) shows exactly K."""
    fresh = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=30, limits=fresh) as http:
        await _all_workers_up(http, workers.url, 2)
        k = 0
        for _ in range(20):  # until the kernel has handed both workers some requests
            answers = await asyncio.gather(
                *(http.post(f"{workers.url}/v1/chat/completions", json=_body(i)) for i in range(6))
            )
            assert [a.status_code for a in answers] == [200] * 6
            k += 6
            spread = (await http.get(f"{workers.url}/v1/stats")).json()["server"]["workers"]
            if min(spread["requests"]) > 0:
                break
        assert min(spread["requests"]) > 0 and sum(spread["requests"]) == k
        metrics = [_requests_in((await http.get(f"{workers.url}/metrics")).text) for _ in range(6)]
        stats = [(await http.get(f"{workers.url}/v1/stats")).json() for _ in range(6)]
        health = [(await http.get(f"{workers.url}/v1/health")).json() for _ in range(6)]
        board = [(await http.get(f"{workers.url}/v1/dashboard")).json() for _ in range(6)]
        limits = [(await http.get(f"{workers.url}/v1/limits")).json() for _ in range(6)]
    assert metrics == [k] * 6
    assert [h["models"]["primary/gpt-4o-mini"]["requests"] for h in health] == [k] * 6
    assert [b["providers"]["primary"]["requests"] for b in board] == [k] * 6
    assert [x["providers"]["primary"]["queued"] for x in limits] == [0] * 6
    assert [s["engine"]["totals"]["requests"] for s in stats] == [k] * 6
    assert [s["engine"]["providers"]["primary"]["requests"] for s in stats] == [k] * 6
    assert all(s["server"]["workers"]["answered"] == 2 for s in stats)
    assert len(workers.upstream.requests) == k

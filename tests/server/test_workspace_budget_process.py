"""Workspace budgets through the real `python -m engine serve` process: concurrent bursts
of `provider/name` pins and of invented workspace names stop at the caps, on every
endpoint (chat, streaming chat, Responses, Anthropic Messages, Completions, embeddings)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.cli import main
from engine.testing.fakes import FakeOpenAI
from tests.server.realstack import write_config
from tests.server.test_process import ROOT, _free_port, _wait_ready

#: Prices of realstack's models: $1 in, $2 out per 1M tokens; a call here reserves ~$0.0024.
WORKSPACES = 'workspaces:\n  team: {daily_usd: 0.01}\n  "*": {daily_usd: 0.01}\n'
PROMPT = [{"role": "user", "content": "hello " * 400}]


@dataclass
class Served:
    url: str
    ledger: Path
    proc: subprocess.Popen[bytes]
    config: Path

    def stop(self) -> None:
        """SIGTERM: the server drains and flushes its ledger before it exits."""
        self.proc.terminate()
        assert self.proc.wait(60) == 0


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Served]:
    async with FakeOpenAI() as primary:
        config = write_config(tmp_path / "cfg", primary.url, primary.url)
        models = (config / "models.yaml").read_text()  # a declared limit below the fake's
        models = models.replace(
            "api_key: sk-primary-key-0000000}",
            "api_key: sk-primary-key-0000000, limits: {rpm: 5000}}",
        )
        (config / "models.yaml").write_text(models)
        with (config / "models.yaml").open("a") as f:
            f.write(
                "  primary/text-embedding-3-small:\n"
                "    capabilities: [embeddings]\n    context_window: 100000\n"
                "    input_price: 1.0\n    output_price: 0\n" + WORKSPACES
            )
        port, ledger = _free_port(), tmp_path / "ledger.sqlite3"
        env = {k: v for k, v in os.environ.items() if not k.endswith("_BASE_URL")}
        env |= {"ENGINE_LEDGER": str(ledger)}
        argv = [sys.executable, "-m", "engine", "serve", "--config", str(config)]
        with (tmp_path / "server.log").open("wb") as out:
            proc = subprocess.Popen(
                [*argv, "--port", str(port)], cwd=ROOT, env=env, stdout=out, stderr=out
            )
        try:
            url = f"http://127.0.0.1:{port}"
            await _wait_ready(url, proc)
            yield Served(url, ledger, proc, config)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


async def burst(url: str, n: int, workspace: Any, path: str = "/v1/chat/completions",
                body: dict[str, Any] | None = None) -> list[httpx.Response]:  # fmt: skip
    """`n` requests at once; `workspace(i)` names the workspace of the i-th."""
    body = body or {"model": "primary/gpt-4o-mini", "messages": PROMPT, "max_tokens": 1000}
    limits = httpx.Limits(max_connections=n)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        return list(
            await asyncio.gather(
                *(
                    http.post(path, json=body, headers={"x-engine-workspace": workspace(i)})
                    for i in range(n)
                )
            )
        )


async def refused_within(url: str, n: int, path: str, body: dict[str, Any]) -> bool:
    """Calls one after another in new invented workspaces: is one refused (429) by then?"""
    for i in range(n):
        (resp,) = await burst(url, 1, lambda _, i=i: f"another-made-up-{i}", path, body)
        if resp.status_code == 429:
            return True
        assert resp.status_code == 200, (path, resp.text)
    return False


def ledger_spend(ledger: Path, names: tuple[str, ...] | None = None) -> float:
    """What the ledger recorded (after the server flushed it on exit)."""
    with sqlite3.connect(ledger) as db:
        rows = db.execute("SELECT workspace, COALESCE(cost_usd, 0) FROM attempts").fetchall()
    return sum(cost for ws, cost in rows if names is None or ws in names)


async def test_pins_and_invented_workspaces_stop_at_their_caps(server: Served) -> None:
    """100 concurrent pins in a listed workspace and 100 more spread over 50 invented names:
    each group answers some, is refused the rest with 429 budget_exceeded, and the ledger
    shows at most its $0.01; every other endpoint (and a stream) reserves from the same
    pool: a few more calls at most, then a refusal."""
    url = server.url
    team, invented = await asyncio.gather(
        burst(url, 100, lambda i: "team"), burst(url, 100, lambda i: f"made-up-{i % 50}")
    )
    for group in (team, invented):
        codes = [r.status_code for r in group]
        assert 0 < codes.count(200) < 100 and codes.count(200) + codes.count(429) == 100
        refused = next(r for r in group if r.status_code == 429)
        assert refused.json()["error"]["code"] == "budget_exceeded"
    others = {
        "/v1/responses": {"model": "primary/gpt-4o-mini", "input": "hello " * 400},
        "/v1/messages": {"model": "primary/gpt-4o-mini", "max_tokens": 1000, "messages": PROMPT},
        "/v1/completions": {"model": "primary/gpt-4o-mini", "prompt": "hello " * 400},
        "/v1/embeddings": {"model": "primary/text-embedding-3-small", "input": "x " * 20000},
    }
    stream = {
        "model": "primary/gpt-4o-mini",
        "messages": PROMPT,
        "max_tokens": 1000,
        "stream": True,
    }
    others["/v1/chat/completions"] = stream
    for path, body in others.items():  # what room the bursts left, then a refusal
        assert await refused_within(url, 30, path, body), path
    async with httpx.AsyncClient(base_url=url) as http:
        limits = (await http.get("/v1/limits")).json()["budgets"]
    assert limits["workspaces"]["team"] == {"daily_usd": 0.01, "monthly_usd": None}
    assert limits["workspaces"]["*"] == {"daily_usd": 0.01, "monthly_usd": None}
    server.stop()
    assert 0 < ledger_spend(server.ledger, ("team",)) <= 0.01
    assert 0 < ledger_spend(server.ledger) - ledger_spend(server.ledger, ("team",)) <= 0.01


async def test_validate_reads_the_limits_the_server_heard(
    server: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    """The serving process keeps what the provider announced beside its ledger; validate
    then warns at the declared `rpm: 5000` (the fake announces 10,000)."""
    (answer,) = await burst(server.url, 1, lambda i: "team")
    assert answer.status_code == 200
    server.stop()
    heard = server.ledger.with_name("announced-limits.json")
    assert main(["validate", "--announced", str(heard), str(server.config)]) == 0
    (line,) = [x for x in capsys.readouterr().out.splitlines() if "announced" in x]
    assert "providers.primary.limits.rpm: declared rpm 5000 is below the 10000" in line

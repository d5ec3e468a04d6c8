"""Real `engine serve` processes with client keys, for the client-key tests.

`KeyStack` writes a config (one fake OpenAI upstream, one policy `chat`), a server.yaml
with the keys given, and starts as many server processes as asked on that config, sharing
whatever the environment shares (a Redis through ENGINE_STATE_URL, the ledger file).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from engine.testing.fakes import FakeOpenAI
from engine.testing.servers import free_port
from tests.server.test_process import _wait_ready

ROOT = Path(__file__).resolve().parents[2]
ADMIN = "sk-admin-secret-0123456789"
MODELS = """\
providers:
  primary: {{protocol: openai, base_url: '{url}', api_key: sk-primary-key-0000000}}
models:
  primary/gpt-4o-mini:
    upstream: gpt-4o-mini
    capabilities: [chat, streaming]
    context_window: 128000
    max_output: 1000
    input_price: 10.0
    output_price: 10.0
"""
ROUTE = "strategy: ordered\ncandidates: [primary/gpt-4o-mini]\nretries: {max_retries: 0}\n"


@dataclass
class KeyStack:
    """A config directory, its upstream, and the server processes started on it."""

    config: Path
    upstream: FakeOpenAI
    env: dict[str, str]
    logs: Path
    urls: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    async def start(self, *extra: str) -> str:
        """One more `engine serve` on this config; returns its base URL once ready."""
        port = free_port()
        log = (self.logs / f"server{len(self.procs)}.log").open("ab")
        argv = [sys.executable, "-m", "engine", "serve", "--config", str(self.config)]
        argv += ["--port", str(port), *extra]
        proc = subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=log, stderr=log)
        url = f"http://127.0.0.1:{port}"
        self.procs.append(proc)
        self.urls.append(url)
        await _wait_ready(url, proc)
        return url

    def stop(self, index: int) -> None:
        """SIGTERM one server and wait (it drains and flushes its ledger)."""
        proc = self.procs[index]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)

    def log_text(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.logs.glob("*.log")))


@asynccontextmanager
async def key_stack(
    tmp_path: Path, server_yaml: str, env: dict[str, str] | None = None
) -> AsyncIterator[KeyStack]:
    """The config, the upstream and (once `start`ed) the servers; all stopped after."""
    async with FakeOpenAI() as upstream:
        config = tmp_path / "cfg"
        (config / "routes").mkdir(parents=True)
        (config / "models.yaml").write_text(MODELS.format(url=upstream.url))
        (config / "routes" / "chat.yaml").write_text(ROUTE)
        (config / "server.yaml").write_text(server_yaml)
        base = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_")}
        base = {k: v for k, v in base.items() if not k.endswith("_BASE_URL")}
        stack = KeyStack(config, upstream, {**base, **(env or {})}, tmp_path)
        try:
            yield stack
        finally:
            for i in range(len(stack.procs)):
                try:
                    stack.stop(i)
                except subprocess.TimeoutExpired:
                    stack.procs[i].kill()
                    stack.procs[i].wait()


def body(i: int, max_tokens: int = 10) -> dict[str, object]:
    return {
        "model": "chat",
        "messages": [{"role": "user", "content": f"question number {i}"}],
        "max_tokens": max_tokens,
    }


async def burst(
    urls: list[str], key: str, total: int, concurrency: int
) -> tuple[list[httpx.Response], float]:
    """`total` chat requests, `concurrency` at a time, spread over `urls`; the answers and
    the sum of the cost each 200 reported (x-engine-cost-usd)."""
    gate = asyncio.Semaphore(concurrency)
    headers = {"authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=concurrency * 2)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:

        async def one(i: int) -> httpx.Response:
            async with gate:
                url = urls[i % len(urls)]
                return await http.post(f"{url}/v1/chat/completions", json=body(i), headers=headers)

        answers = await asyncio.gather(*(one(i) for i in range(total)))
    spent = sum(float(a.headers["x-engine-cost-usd"]) for a in answers if a.status_code == 200)
    return list(answers), spent


async def key_spend(url: str, key: str) -> dict[str, float]:
    """The server's /v1/stats `key_spend_usd` (all-time spend per key id)."""
    async with httpx.AsyncClient(timeout=10) as http:
        stats = await http.get(f"{url}/v1/stats", headers={"authorization": f"Bearer {key}"})
    spend: dict[str, float] = stats.json()["server"]["key_spend_usd"]
    return spend

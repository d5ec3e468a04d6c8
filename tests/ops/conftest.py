"""The real `python -m engine serve` process over two fake OpenAI upstreams, for ops tests.

`start(...)` runs the server as an operator would (its own process, a config directory, a
ledger file, environment variables), waits for /readyz, and stops it with SIGTERM at the end
so the ledger is flushed. Tests reach it over loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from engine.testing.fakes import FakeOpenAI
from tests.server.realstack import write_config

ROOT = Path(__file__).resolve().parents[2]
MSG = [{"role": "user", "content": "Tell me about routing."}]


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path
    ledger: Path
    config: Path
    primary: FakeOpenAI
    backup: FakeOpenAI

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def http(self, key: str | None = None) -> httpx.AsyncClient:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        return httpx.AsyncClient(base_url=self.url, timeout=30, headers=headers)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Poll /readyz (bounded, about 30 s) until the server answers 200."""
    async with httpx.AsyncClient(timeout=1) as http:
        for _ in range(1500):
            if proc.poll() is not None:
                raise AssertionError(f"server exited with {proc.returncode}: {log.read_text()}")
            with contextlib.suppress(httpx.TransportError):
                if (await http.get(f"{url}/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.02)
    raise AssertionError("server never became ready")


async def stop(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM, then wait (bounded) for the graceful exit."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    for _ in range(1500):
        if proc.poll() is not None:
            return proc.returncode
        await asyncio.sleep(0.02)
    proc.kill()
    proc.wait()
    raise AssertionError("server did not exit after SIGTERM")


@contextlib.asynccontextmanager
async def start(
    tmp: Path,
    server_yaml: str = "",
    env: Mapping[str, str] | None = None,
    routes_extra: str = "",
) -> AsyncIterator[Server]:
    """Serve a fresh config in `tmp` (with `server_yaml` as server.yaml) until the block ends."""
    async with FakeOpenAI() as primary, FakeOpenAI() as backup:
        config = write_config(tmp / "cfg", primary.url, backup.url)
        if routes_extra:
            (config / "routes" / "chat.yaml").write_text(
                (config / "routes" / "chat.yaml").read_text() + routes_extra
            )
        if server_yaml:
            (config / "server.yaml").write_text(server_yaml)
        port = free_port()
        log = tmp / "server.log"
        ledger = tmp / "ledger.sqlite3"
        environ = {
            k: v
            for k, v in os.environ.items()
            if not k.endswith("_BASE_URL") and k != "ENGINE_API_KEYS"
        }
        environ.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
        environ |= {"ENGINE_LEDGER": str(ledger), "ENGINE_DRAIN_TIMEOUT": "10", **(env or {})}
        argv = [sys.executable, "-m", "engine", "serve", "--config", str(config)]
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [*argv, "--port", str(port)], cwd=ROOT, env=environ, stdout=out, stderr=out
            )
        url = f"http://127.0.0.1:{port}"
        try:
            await wait_ready(url, proc, log)
            yield Server(proc, url, log, ledger, config, primary, backup)
        finally:
            await stop(proc)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Server]:
    """The server with no keys, no plugins, no tracing."""
    async with start(tmp_path) as server:
        yield server

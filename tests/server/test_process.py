"""The real `python -m engine serve` process, spoken to over a socket, then SIGTERM'd."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from engine.testing.fakes import FakeOpenAI, Fault
from tests.server.realstack import write_config

MSG = [{"role": "user", "content": "Tell me a long story about routing."}]
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Proc:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path
    ledger: Path
    upstream: FakeOpenAI

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    """Poll /readyz (bounded: about 30 s) until the server answers 200."""
    async with httpx.AsyncClient(timeout=1) as http:
        for _ in range(1500):
            if proc.poll() is not None:
                raise AssertionError(f"server exited early with {proc.returncode}")
            try:
                if (await http.get(f"{url}/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.02)
    raise AssertionError("server never became ready")


async def _wait_exit(proc: subprocess.Popen[bytes]) -> int:
    for _ in range(1500):
        if proc.poll() is not None:
            return proc.returncode
        await asyncio.sleep(0.02)
    proc.kill()
    raise AssertionError("server did not exit after SIGTERM")


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Proc]:
    async with FakeOpenAI() as primary, FakeOpenAI() as backup:
        config = write_config(tmp_path / "cfg", primary.url, backup.url)
        port = _free_port()
        log = tmp_path / "server.log"
        ledger = tmp_path / "ledger.sqlite3"
        env = {k: v for k, v in os.environ.items() if not k.endswith("_BASE_URL")}
        env |= {"ENGINE_LEDGER": str(ledger), "ENGINE_DRAIN_TIMEOUT": "20"}
        argv = [sys.executable, "-m", "engine", "serve", "--config", str(config)]
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [*argv, "--port", str(port)], cwd=ROOT, env=env, stdout=out, stderr=out
            )
        try:
            url = f"http://127.0.0.1:{port}"
            await _wait_ready(url, proc)
            yield Proc(proc, url, log, ledger, primary)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


async def test_serves_over_a_socket_and_prints_providers(served: Proc) -> None:
    """The real process answers the SDK and its start-up banner lists enabled providers."""
    client = openai.AsyncOpenAI(base_url=f"{served.url}/v1", api_key="x", max_retries=0)
    async with client:
        completion = await client.chat.completions.create(model="chat", messages=MSG)
    assert completion.choices[0].message.content
    assert "provider primary" in served.output() and "enabled" in served.output()


async def test_sigterm_drains_an_open_stream_and_flushes_the_ledger(served: Proc) -> None:
    """SIGTERM mid-stream: the stream still completes, the process exits 0, the ledger has it."""
    served.upstream.script([Fault(trickle=0.02)])
    body = {"model": "chat", "messages": MSG, "stream": True}
    lines: list[str] = []
    async with (
        httpx.AsyncClient(base_url=served.url, timeout=30) as http,
        http.stream("POST", "/v1/chat/completions", json=body) as resp,
    ):
        async for line in resp.aiter_lines():
            if line.startswith("data:") and not lines:
                served.proc.send_signal(signal.SIGTERM)
            if line.startswith("data:"):
                lines.append(line)
    assert lines[-1] == "data: [DONE]"
    assert await _wait_exit(served.proc) == 0
    with sqlite3.connect(served.ledger) as db:
        (rows,) = db.execute("SELECT COUNT(*) FROM attempts").fetchone()
    assert rows >= 1


async def test_broken_config_exits_1_with_diagnostics(tmp_path: Path) -> None:
    """A config that does not compile stops the command before binding, with file:line."""
    (tmp_path / "routes").mkdir()
    (tmp_path / "models.yaml").write_text("providers: {}\nmodels: {}\n")
    (tmp_path / "routes" / "bad.yaml").write_text("strategy: nonsense\n")
    out = subprocess.run(
        [sys.executable, "-m", "engine", "serve", "--config", str(tmp_path), "--port", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 1
    assert "bad.yaml" in out.stderr
    assert "Traceback" not in out.stderr


async def test_refuses_public_bind_without_keys(tmp_path: Path) -> None:
    """Binding 0.0.0.0 without API keys or --insecure exits 2 before listening."""
    config = write_config(tmp_path, "http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1")
    env = {k: v for k, v in os.environ.items() if k != "ENGINE_API_KEYS"}
    out = subprocess.run(
        [sys.executable, "-m", "engine", "serve", "--config", str(config), "--host", "0.0.0.0"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert out.returncode == 2
    assert "--insecure" in out.stderr


def test_settle_heap_freezes_start_up_objects_and_raises_the_young_threshold() -> None:
    """After start-up the worker freezes its heap and collects the young generation rarely."""
    code = (
        "import gc\n"
        "from engine.server.runner import GC_YOUNG_THRESHOLD, settle_heap\n"
        "settle_heap()\n"
        "assert gc.get_freeze_count() > 0, gc.get_freeze_count()\n"
        "assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD, gc.get_threshold()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr

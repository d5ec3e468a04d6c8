"""Steady concurrent traffic against a real `engine serve` process, then `kill -9`.

The client half of the crash tests (test_crash_ledger.py): `Traffic` runs concurrent
loops of chat requests, streaming and not, each in workspace `acme`, and remembers every
answer the client got in full: the request id the engine put in the answer's `id`
(`chatcmpl-<request id>`, the ledger's `request_id`), and for non-streaming answers the
cost the server announced. A streamed answer counts only once its `[DONE]` arrived.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson

from engine.testing.servers import free_port
from tests.server.test_process import _wait_ready

ROOT = Path(__file__).resolve().parents[2]
WORKSPACE = "acme"


@dataclass
class Answered:
    """What the client holds: ids of answers received in full, and announced costs."""

    ids: list[str] = field(default_factory=list)
    costs: dict[str, float] = field(default_factory=dict)  # non-streaming answers
    failed: int = 0  # requests cut by the kill (no answer)


def _body(i: int, stream: bool) -> dict[str, object]:
    return {
        "model": "chat",
        "messages": [{"role": "user", "content": f"question number {i}"}],
        "max_tokens": 20,
        "stream": stream,
        "metadata": {"workspace": WORKSPACE},
    }


async def _one(http: httpx.AsyncClient, i: int, out: Answered) -> None:
    if i % 2:
        async with http.stream("POST", "/v1/chat/completions", json=_body(i, True)) as resp:
            assert resp.status_code == 200, await resp.aread()
            rid, done = "", False
            async for line in resp.aiter_lines():
                if line == "data: [DONE]":
                    done = True
                elif line.startswith("data: ") and not rid:
                    rid = orjson.loads(line[6:])["id"]
        if done:
            out.ids.append(rid.removeprefix("chatcmpl-"))
        return
    resp = await http.post("/v1/chat/completions", json=_body(i, False))
    assert resp.status_code == 200, resp.text
    rid = resp.json()["id"].removeprefix("chatcmpl-")
    out.ids.append(rid)
    out.costs[rid] = float(resp.headers["x-engine-cost-usd"])


async def traffic_then_kill(
    url: str, proc: subprocess.Popen[bytes], *, answered_before_kill: int, concurrency: int
) -> Answered:
    """`concurrency` loops send requests back to back; once `answered_before_kill` answers
    came back, the server's process group (its workers too) gets SIGKILL while the loops
    keep sending; each loop stops at its first transport error."""
    out = Answered()
    counter = iter(range(10**9))
    killed = asyncio.Event()

    async def loop(http: httpx.AsyncClient) -> None:
        while True:
            try:
                await _one(http, next(counter), out)
            except (httpx.TransportError, httpx.RemoteProtocolError):
                out.failed += 1
                return
            if len(out.ids) >= answered_before_kill and not killed.is_set():
                killed.set()
                os.killpg(proc.pid, signal.SIGKILL)  # the server and any workers at once

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as http:
        await asyncio.gather(*(loop(http) for _ in range(concurrency)))
    proc.wait(10)
    return out


async def started(
    config: Path, env: dict[str, str], log: Path, *args: str
) -> tuple[str, subprocess.Popen[bytes]]:
    """`engine serve` in a session of its own (so SIGKILL reaches its workers), ready."""
    port = free_port()
    argv = [sys.executable, "-m", "engine", "serve", "--config", str(config), "--port", str(port)]
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [*argv, *args], cwd=ROOT, env=env, stdout=out, stderr=out, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    await _wait_ready(url, proc)
    return url, proc


def server_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_BASE_URL")}
    env.pop("ENGINE_LEDGER_URL", None)
    env.pop("ENGINE_STATE_URL", None)
    return env | extra


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (the server flushes its ledger), then wait."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

"""A stream still running when SIGTERM's drain timeout passes ends with an SSE error event
(code `server_shutting_down`), not silently (issue 14)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from engine.testing.fakes import FakeOpenAI, Fault
from tests.server.realstack import write_config
from tests.server.test_process import MSG, ROOT, _free_port, _wait_exit, _wait_ready


async def test_a_stream_cut_by_the_drain_timeout_ends_with_an_error_event(tmp_path: Path) -> None:
    """SIGTERM mid-stream with a 1 s drain timeout and an upstream slower than that: the
    client's last event is an error naming the shutdown, with no [DONE] before it."""
    async with FakeOpenAI() as primary, FakeOpenAI() as backup:
        primary.script([Fault(trickle=0.5)])
        config = write_config(tmp_path / "cfg", primary.url, backup.url)
        port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.endswith("_BASE_URL")}
        env |= {"ENGINE_LEDGER": str(tmp_path / "l.sqlite3"), "ENGINE_DRAIN_TIMEOUT": "1"}
        argv = [sys.executable, "-m", "engine", "serve", "--config", str(config)]
        with (tmp_path / "server.log").open("wb") as out:
            proc = subprocess.Popen(
                [*argv, "--port", str(port)], cwd=ROOT, env=env, stdout=out, stderr=out
            )
        try:
            url = f"http://127.0.0.1:{port}"
            await _wait_ready(url, proc)
            body = {"model": "chat", "messages": MSG, "stream": True}
            events: list[str] = []
            async with (
                httpx.AsyncClient(base_url=url, timeout=30) as http,
                http.stream("POST", "/v1/chat/completions", json=body) as resp,
            ):
                async for line in resp.aiter_lines():
                    if line.startswith("data:"):
                        if not events:
                            proc.send_signal(signal.SIGTERM)
                        events.append(line.removeprefix("data: "))
            await _wait_exit(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert "[DONE]" not in events
    last = json.loads(events[-1])
    assert last["error"]["code"] == "server_shutting_down", events[-3:]

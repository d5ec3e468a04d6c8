"""Through the OpenAI-compatible server: failing requests, the operational endpoints and the
server's own logs never show a provider key, nor a client key (right or wrong)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine import Engine
from engine.cli import main
from engine.secrets import Secret
from engine.server.settings import ApiKey, ServerSettings
from engine.testing.clock import FakeClock
from engine.testing.fakes import Fault
from tests.acceptance.conftest import MOCK_MODELS, write_config
from tests.server.conftest import serving

from .conftest import NO_BACKOFF, Canaries, Scanner, ask, stack_config, upstreams

#: In this order: a 401 marks the keys bad for good, so it comes last.
FAILURES = {
    "429-echo": Fault(status=429, retry_after=1, echo_key=True),
    "500-echo": Fault(status=500, echo_key=True),
    "529-echo": Fault(status=529, echo_key=True),
    "400-echo": Fault(status=400, echo_key=True),
    "reset": Fault(reset=True),
    "malformed": Fault(malformed=True),
    "error-in-stream-echo": Fault(stream_error_after=0, echo_key=True),
    "error-mid-stream-echo": Fault(stream_error_after=2, echo_key=True),
    "401-echo": Fault(status=401, echo_key=True),
}
OPS = ("/v1/stats", "/metrics", "/v1/models", "/healthz", "/readyz")


def client_key(canaries: Canaries, name: str) -> str:
    """A distinctive client key for the server's own auth, watched like the provider keys."""
    return canaries.add(name, "sk-client-CANARY{}")


def _exposed(resp: httpx.Response, body: str) -> Iterator[tuple[str, Any]]:
    """What a client sees of one answer: status line, every header, the body."""
    yield f"{resp.request.url.path} status", f"{resp.status_code} {resp.reason_phrase}"
    yield f"{resp.request.url.path} headers", list(resp.headers.multi_items())
    yield f"{resp.request.url.path} body", body


async def _call(http: httpx.AsyncClient, stream: bool, key: str) -> list[tuple[str, Any]]:
    body = {"model": "default", **ask(), "stream": stream}
    auth = {"Authorization": f"Bearer {key}"}
    async with http.stream("POST", "/v1/chat/completions", json=body, headers=auth) as resp:
        text = "".join([chunk async for chunk in resp.aiter_text()])
    return list(_exposed(resp, text))


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_failing_requests_and_ops_endpoints_show_no_key(
    stream: bool, canaries: Canaries, scanner: Scanner, tmp_path: Path
) -> None:
    """Every failure class, then stats/metrics/models/health: bodies and headers hold no key."""
    mine, wrong = client_key(canaries, "client"), client_key(canaries, "wrong client")
    async with upstreams(canaries) as ups:
        config = stack_config(tmp_path / "cfg", ups)
        clock = FakeClock()
        eng = Engine.from_config(config, clock=clock)
        keys = (ApiKey(id="team", secret=Secret(mine), workspace="team"),)
        settings = ServerSettings(config_dir=config, api_keys=keys)
        async with serving(eng, settings) as running, running.http() as http:
            statuses = []
            for name, fault in FAILURES.items():
                if "stream" in name and not stream:
                    continue
                clock.advance(3600)  # breakers opened by the last failure class cool down
                ups.fail_with(fault)
                seen = await _call(http, stream, mine)
                statuses.append(seen[0][1])
                for item in seen:
                    scanner.add(*item)
            ups.fail_with(Fault())
            for item in await _call(http, stream, wrong):  # a wrong client key is not echoed
                scanner.add(*item)
            for path in OPS:
                resp = await http.get(path, headers={"Authorization": f"Bearer {mine}"})
                for item in _exposed(resp, resp.text):
                    scanner.add(*item)
    if not stream:  # a stream's status is sent before it can fail
        assert statuses and all(not s.startswith("200") for s in statuses)
    scanner.check(("server", running.app), ("settings", settings))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _until_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    """Poll /readyz (bounded) until the server process answers."""
    async with httpx.AsyncClient(timeout=1) as http:
        for _ in range(300):
            assert proc.poll() is None, f"server exited early with {proc.returncode}"
            with contextlib.suppress(httpx.TransportError):
                if (await http.get(f"{url}/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise AssertionError("server never became ready")


async def test_server_process_logs_at_debug_show_no_key(
    canaries: Canaries, scanner: Scanner, tmp_path: Path
) -> None:
    """`python -m engine serve` at debug with access logs: failures, SIGTERM; no key logged."""
    mine = client_key(canaries, "client")
    client_key(canaries, "wrong client")
    async with upstreams(canaries) as ups:
        config = stack_config(tmp_path / "cfg", ups, NO_BACKOFF)
        port, log = _free_port(), tmp_path / "server.log"
        env = {k: v for k, v in os.environ.items() if not k.endswith("_BASE_URL")}
        env |= {
            "ENGINE_LOG_LEVEL": "debug",
            "ENGINE_ACCESS_LOG": "true",
            "ENGINE_WARM_ON_START": "true",
            "ENGINE_API_KEYS": f"{mine},{client_key(canaries, 'second client')}",
            "ENGINE_DRAIN_TIMEOUT": "5",
            "PYTHONASYNCIODEBUG": "1",
        }
        argv = [sys.executable, "-m", "engine", "serve", "--config", str(config)]
        with log.open("wb") as out:
            proc = subprocess.Popen([*argv, "--port", str(port)], env=env, stdout=out, stderr=out)
        try:
            url = f"http://127.0.0.1:{port}"
            await _until_ready(url, proc)
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                for fault in (FAILURES["500-echo"], FAILURES["error-mid-stream-echo"]):
                    ups.fail_with(fault)
                    for stream in (False, True):
                        for item in await _call(http, stream, mine):
                            scanner.add(*item)
                ups.fail_with(Fault())
                for item in await _call(http, False, canaries.keys["wrong client"]):
                    scanner.add(*item)
                for path in OPS:
                    resp = await http.get(path, headers={"Authorization": f"Bearer {mine}"})
                    scanner.add(path, resp.text)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    output = log.read_text(errors="replace")
    # the logs were captured (the access log is JSON lines: server/access.py)
    assert "provider openai" in output and '"path":"/metrics"' in output
    scanner.check(("server output", output))


SERVER_YAML = {
    "syntax-error-on-the-key-line": "api_keys:\n  - key: {key}: oops\n",
    "tagged-key": "api_keys:\n  - key: !!int {key}\n",
    "key-as-list": "api_keys:\n  - key: [{key}]\n",
    "unknown-field-next-to-key": "api_keys:\n  - {{key: {key}, budget: 3}}\n",
}


@pytest.mark.parametrize("case", SERVER_YAML, ids=str)
def test_a_broken_server_yaml_never_prints_its_client_key(
    case: str,
    canaries: Canaries,
    scanner: Scanner,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """serve refuses a broken server.yaml with file:line, no traceback, and no client key."""
    for name in ("ENGINE_CONFIG", "ENGINE_HOST", "ENGINE_PORT", "ENGINE_WORKERS"):
        monkeypatch.delenv(name, raising=False)  # serve exports its flags; undo at teardown
    for name in ("ENGINE_LOG_LEVEL", "ENGINE_INSECURE", "ENGINE_API_KEYS"):
        monkeypatch.delenv(name, raising=False)
    key = client_key(canaries, "client")
    config = write_config(tmp_path / "cfg", MOCK_MODELS, {"default": "strategy: ordered\n"})
    (config / "server.yaml").write_text(SERVER_YAML[case].format(key=key))
    code = main(["serve", "--config", str(config), "--port", "1"])
    out = capsys.readouterr()
    assert code == 1 and "server.yaml" in out.err and "Traceback" not in out.err
    scanner.check(("stdout", out.out), ("stderr", out.err))

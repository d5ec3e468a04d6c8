"""One real `python -m engine serve` process per test module, over real fake upstreams.

The judges are clients no one here wrote (official SDKs, frameworks, the `llm` CLI); they
talk to the server process over a socket exactly as they would to OpenAI or Anthropic.
Upstreams: the in-process `mock` provider, and OpenAI, Anthropic and Gemini fakes, each in
its own process (`python -m engine.testing.fakes`).

Policies: `chat` (mock), `oai` (the OpenAI fake's gpt-4o-mini), `claude` (the Anthropic
fake, a thinking model), `gem` (the Gemini fake) and `reasoner` (the OpenAI fake's
gpt-5-nano with its parameter rules: max_completion_tokens, default sampling only).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]

MODELS = """\
providers:
  mock: {{protocol: mock}}
  oai: {{protocol: openai, base_url: '{openai}', api_key: sk-fake-openai-000000}}
  ant: {{protocol: anthropic, base_url: '{anthropic}', api_key: sk-ant-fake-0000000}}
  gem: {{protocol: gemini, base_url: '{gemini}', api_key: fake-gemini-key-00000}}
models:
  mock/m: {{capabilities: [chat, tools, json, streaming], context_window: 32000, input_price: 1, output_price: 2}}
  oai/gpt-4o-mini: {{capabilities: [chat, tools, json, streaming], context_window: 128000, input_price: 0.15, output_price: 0.6}}
  oai/gpt-5-nano:
    capabilities: [chat, reasoning, tools, json, streaming]
    context_window: 400000
    input_price: 0.05
    output_price: 0.4
    parameters: {{token_limit: max_completion_tokens, temperature: false, reasoning: true, reasoning_efforts: [minimal, low, medium, high]}}
  ant/claude-test:
    capabilities: [chat, reasoning, tools, json, streaming]
    context_window: 200000
    input_price: 3
    output_price: 15
    parameters: {{reasoning: true}}
  gem/gemini-test: {{capabilities: [chat, tools, json, streaming], context_window: 1000000, input_price: 0.3, output_price: 2.5}}
  mock/embed: {{capabilities: [embeddings], context_window: 8192}}
  oai/text-embedding-3-small: {{capabilities: [embeddings], context_window: 8191, input_price: 0.02, output_price: 0}}
  gem/gemini-embedding-001: {{capabilities: [embeddings], context_window: 2048, input_price: 0.15, output_price: 0}}
"""
POLICIES = {
    "chat": "mock/m",
    "oai": "oai/gpt-4o-mini",
    "claude": "ant/claude-test",
    "gem": "gem/gemini-test",
    "reasoner": "oai/gpt-5-nano",
    "embed": "oai/text-embedding-3-small, mock/embed",
}


@dataclass
class Stack:
    url: str  # the server, e.g. http://127.0.0.1:PORT
    log: Path
    config: Path

    @property
    def v1(self) -> str:
        return f"{self.url}/v1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _fake(protocol: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.testing.fakes", protocol],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    assert url.startswith("http://"), f"fake {protocol} did not start"
    return proc, url


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {log.read_text(errors='replace')}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError("server never became ready")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The fakes and one server process, shared by the module's tests."""
    fakes = {p: _fake(p) for p in ("openai", "anthropic", "gemini")}
    directory = tmp_path_factory.mktemp("judge")
    try:
        (directory / "routes").mkdir()
        urls = {p: url for p, (_, url) in fakes.items()}
        (directory / "models.yaml").write_text(MODELS.format(**urls))
        for name, model in POLICIES.items():
            (directory / "routes" / f"{name}.yaml").write_text(
                f"strategy: ordered\ncandidates: [{model}]\nretries: {{max_retries: 0}}\n"
            )
        port, log = free_port(), directory / "server.log"
        env = {k: v for k, v in os.environ.items() if not k.endswith("_BASE_URL")}
        env |= {"ENGINE_LEDGER": str(directory / "ledger.sqlite3")}
        argv = [sys.executable, "-m", "engine", "serve", "--config", str(directory)]
        with log.open("wb") as out:
            server = subprocess.Popen(
                [*argv, "--port", str(port)], cwd=ROOT, env=env, stdout=out, stderr=out
            )
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_ready(url, server, log)
            yield Stack(url, log, directory)
        finally:
            server.terminate()
            server.wait(timeout=30)
    finally:
        for proc, _ in fakes.values():
            proc.terminate()
            proc.wait(timeout=10)

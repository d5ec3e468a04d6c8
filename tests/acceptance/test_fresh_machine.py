"""A fresh machine: the shipped models.yaml and routes/, no API keys, no Ollama running.

Every shipped policy must answer its first request (issue 14: before, five did not, among
them the README's `smart_router`: the unreachable Ollama models were retried until
max_attempts was spent and the chain `[mock/smart]` was never tried).
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from engine import Engine
from engine.testing.clock import FakeClock

from .conftest import ROOT, ask, shipped_config

POLICIES = sorted(p.stem for p in (ROOT / "routes").glob("*.yaml"))


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("policy", POLICIES)
async def test_every_shipped_policy_answers_its_first_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy: str
) -> None:
    monkeypatch.setenv("OLLAMA_BASE_URL", f"http://127.0.0.1:{closed_port()}")
    eng = Engine.from_config(shipped_config(tmp_path / "cfg"), clock=FakeClock())
    try:
        if policy == "embeddings":
            resp = await eng.aembed({"input": ["hello there"]}, policy=policy)
        else:
            resp = await eng.arun(ask(), policy=policy)
    finally:
        await eng.aclose()
    assert resp.provider == "mock"
    outcomes = [a.outcome for a in resp.attempts]
    assert outcomes[-1] == "ok"
    # Ollama was tried at most once: a refused connection skips its other models.
    calls = [a for a in resp.attempts if a.provider == "ollama" and a.outcome != "skipped"]
    assert len(calls) <= 1


def test_the_policy_list_is_the_shipped_one() -> None:
    """The parametrisation above covers every route file (none silently left out)."""
    assert {"smart_router", "local_first", "local_only", "default"} <= set(POLICIES)
    assert len(POLICIES) == len(list((ROOT / "routes").glob("*.yaml")))

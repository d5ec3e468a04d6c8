"""Health from evidence: pings open a fresh connection, failed pings make a provider read
unhealthy, and health combines breaker, ping record and live error rate.

Each test runs a real OpenAI-protocol fake on loopback and stops or restarts it, as an
upstream that goes away would.
"""

from __future__ import annotations

from typing import Any

from engine import Engine
from engine.testing.fakes import FakeOpenAI

HELLO = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 5}


def build(url: str) -> Engine:
    models: dict[str, Any] = {
        "providers": {
            "oa": {"protocol": "openai", "base_url": url, "api_key": "sk-test-key-1234567"},
            "mock": {"protocol": "mock"},
        },
        "models": {
            "oa/gpt-4o-mini": {"context_window": 128000, "input_price": 0.15, "output_price": 0.6},
            "mock/echo": {"context_window": 8000, "input_price": 0, "output_price": 0},
        },
    }
    routes = {"main": {"strategy": "ordered", "candidates": ["oa/gpt-4o-mini"]}}
    return Engine.from_data(models, routes)


async def test_a_probe_of_a_stopped_upstream_reads_unhealthy() -> None:
    """A warm keep-alive connection to an upstream that has since stopped is no evidence:
    the probe opens a new connection, which is refused."""
    fake = await FakeOpenAI().start()
    eng = build(fake.url)
    try:
        assert await eng.warm() == {"oa": "ok", "mock": "ok"}
        assert (await eng.arun(HELLO, policy="main")).provider == "oa"
        await fake.stop()
        report = await eng.health(probe=True)
    finally:
        await eng.aclose()
    oa = report["providers"]["oa"]
    assert oa["status"] == "unhealthy"
    assert oa["reason"].startswith("the latest ping failed: UnavailableError")
    assert report["providers"]["mock"]["status"] == "healthy"
    assert report["status"] == "degraded"  # the mock is still usable


async def test_pings_that_always_fail_never_read_healthy() -> None:
    """Keep-alive pings (Engine.warm) that fail every time make plain health() say so."""
    fake = await FakeOpenAI().start()
    url = fake.url
    await fake.stop()
    eng = build(url)
    try:
        for _ in range(3):
            assert (await eng.warm())["oa"] == "failed: UnavailableError"
        report = await eng.health(detail=True)
    finally:
        await eng.aclose()
    oa = report["providers"]["oa"]
    assert oa["status"] == "unhealthy"
    assert oa["reason"].startswith("the last 3 pings failed: UnavailableError")
    assert oa["ping_failure_rate"] == 1.0 and oa["consecutive_ping_failures"] == 3
    assert "sk-test" not in repr(report)


async def test_a_provider_back_after_failed_pings_reads_degraded_then_healthy() -> None:
    """Health combines the ping record with the rest: one success after a failure clears
    `unhealthy`, and the recent failure rate (50%) still degrades it."""
    fake = await FakeOpenAI().start()
    port = fake.port
    await fake.stop()
    eng = build(f"http://127.0.0.1:{port}/v1")
    try:
        assert (await eng.warm())["oa"] == "failed: UnavailableError"
        assert (await eng.health())["providers"]["oa"]["status"] == "unhealthy"
        fake = await FakeOpenAI().start(port)
        assert (await eng.warm())["oa"] == "ok"
        oa = (await eng.health())["providers"]["oa"]
        assert oa == {"status": "degraded", "reason": "recent ping failure rate 50%"}
        for _ in range(2):
            await eng.warm()
        assert (await eng.health())["providers"]["oa"]["status"] == "healthy"  # 1 of 4
    finally:
        await eng.aclose()
        await fake.stop()

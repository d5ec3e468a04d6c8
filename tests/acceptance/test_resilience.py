"""Seed features: circuit breaker, retries with exponential backoff, error classes,
provider availability, health with failure rate and last ping, warming and keep-alive."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engine import (
    AllCandidatesFailedError,
    AuthenticationError,
    ContentFilteredError,
    Engine,
    ModelNotFoundError,
    ProviderTimeoutError,
    RateLimitedError,
)
from engine.testing.clock import FakeClock
from engine.testing.fakes import FakeOpenAI, Fault
from tests.acceptance.conftest import MOCK_MODELS, ask, write_config


def openai_then_mock(tmp_path: Path, url: str, route: str = "", timeouts: str = "") -> Path:
    """An OpenAI-protocol provider on a fake upstream, then the mock as the fallback."""
    models = MOCK_MODELS.replace(
        "models:\n",
        f"  openai:\n    protocol: openai\n    base_url: {url}\n    api_key: sk-acc-0006\n"
        f"{timeouts}"
        "models:\n  openai/gpt-4o-mini:\n    capabilities: [chat]\n    context_window: 128000\n"
        "    input_price: 0.15\n    output_price: 0.6\n",
        1,
    )
    route = route or "retries: {max_retries: 0}\n"
    text = "strategy: ordered\ncandidates: [openai/gpt-4o-mini, mock/fast]\n" + route
    return write_config(tmp_path / "cfg", models, {"default": text})


async def test_circuit_breaker_opens_after_five_failures_and_cools_down(tmp_path: Path) -> None:
    """Circuit breaker: 5 failures in 60 s open it (no more calls), 30 s later one probe closes it."""
    clock = FakeClock()
    async with FakeOpenAI() as oa:
        oa.default_fault = Fault(status=500)
        eng = Engine.from_config(openai_then_mock(tmp_path, oa.url), clock=clock)
        for i in range(5):
            clock.advance(10 if i else 0)  # five failures within 40 s
            assert (await eng.arun(ask())).model == "mock/fast"
        assert len(oa.requests) == 5
        assert not eng.is_available("openai")
        skipped = await eng.arun(ask())
        health = await eng.health()
        assert len(oa.requests) == 5  # an open breaker costs no network call
        assert skipped.attempts[0].outcome == "circuit_open"
        assert health["providers"]["openai"]["status"] == "open"
        clock.advance(29)
        await eng.arun(ask())
        assert len(oa.requests) == 5  # still cooling down
        clock.advance(1)
        oa.default_fault = Fault()
        probe = await eng.arun(ask())
        await eng.aclose()
    assert probe.model == "openai/gpt-4o-mini" and len(oa.requests) == 6
    assert eng.is_available("openai")


async def test_failures_spread_beyond_the_window_do_not_open_the_breaker(tmp_path: Path) -> None:
    """Circuit breaker window: 5 failures spread over more than 60 s leave it closed."""
    clock = FakeClock()
    async with FakeOpenAI() as oa:
        oa.default_fault = Fault(status=500)
        eng = Engine.from_config(openai_then_mock(tmp_path, oa.url), clock=clock)
        for _ in range(6):
            await eng.arun(ask())
            clock.advance(16)
        await eng.aclose()
    assert len(oa.requests) == 6 and eng.is_available("openai")


async def test_retries_back_off_exponentially(tmp_path: Path) -> None:
    """Retry logic: exponential backoff 1 s -> 2 s -> 4 s -> 8 s, on the injected clock."""
    clock = FakeClock()
    route = "retries: {max_retries: 4, backoff_initial_s: 1, multiplier: 2, jitter: false}\n"
    route += "fallback: {max_attempts: 6}\n"  # 5 tries of openai, 1 kept for the mock
    async with FakeOpenAI() as oa:
        oa.script([500, 500, 500, 500])
        eng = Engine.from_config(openai_then_mock(tmp_path, oa.url, route), clock=clock)
        resp = await eng.arun(ask())
        await eng.aclose()
    assert resp.model == "openai/gpt-4o-mini" and len(oa.requests) == 5
    assert clock.slept == [1, 2, 4, 8]


async def test_rate_limit_retry_after_is_honoured(tmp_path: Path) -> None:
    """Rate limit handling: a 429 with Retry-After waits that long, then retries."""
    clock = FakeClock()
    async with FakeOpenAI() as oa:
        oa.script([Fault(status=429, retry_after=3)])
        eng = Engine.from_config(
            openai_then_mock(tmp_path, oa.url, "retries: {max_retries: 1}\n"), clock=clock
        )
        resp = await eng.arun(ask())
        await eng.aclose()
    assert resp.model == "openai/gpt-4o-mini" and 3.0 in clock.slept
    assert [a.outcome for a in resp.attempts] == ["rate_limited", "ok"]


@pytest.mark.parametrize(
    ("fault", "error", "outcome"),
    [
        (Fault(status=429, retry_after=1), RateLimitedError, "rate_limited"),
        (Fault(status=401), AuthenticationError, "authentication"),
        (Fault(status=404, code="model_not_found"), ModelNotFoundError, "model_not_found"),
        (Fault(status=400, code="content_filter"), ContentFilteredError, "content_filtered"),
    ],
)
async def test_error_classes_are_typed(
    tmp_path: Path, fault: Fault, error: type[Exception], outcome: str
) -> None:
    """Error classes: rate limit, auth, model not found and content filter are told apart."""
    async with FakeOpenAI() as oa:
        oa.default_fault = fault
        route = "strategy: ordered\ncandidates: [openai/gpt-4o-mini]\nretries: {max_retries: 0}\n"
        cfg = openai_then_mock(tmp_path, oa.url)
        (cfg / "routes" / "default.yaml").write_text(route)
        eng = Engine.from_config(cfg, clock=FakeClock())
        with pytest.raises(AllCandidatesFailedError) as info:
            await eng.arun(ask())
        await eng.aclose()
    (attempt,) = info.value.attempts
    assert attempt.outcome == outcome
    assert error.kind == outcome  # type: ignore[attr-defined]
    assert "sk-acc-0006" not in str(info.value)


async def test_a_refused_answer_reads_as_content_filter(tmp_path: Path) -> None:
    """Content filter on the output: a model refusal ends with finish_reason content_filter."""
    async with FakeOpenAI() as oa:
        oa.default_fault = Fault(refuse=True)
        eng = Engine.from_config(openai_then_mock(tmp_path, oa.url), clock=FakeClock())
        resp = await eng.arun(ask())
        await eng.aclose()
    assert resp.model == "openai/gpt-4o-mini" and resp.finish_reason == "content_filter"


async def test_timeout_is_a_typed_error_and_fails_over(tmp_path: Path) -> None:
    """Error classes: a stalled upstream times out (TimeoutError) and the fallback answers."""
    async with FakeOpenAI() as oa:
        oa.default_fault = Fault(stall=True)
        timeouts = "    timeouts: {connect_s: 0.05, total_s: 0.05, first_token_s: 0.05}\n"
        eng = Engine.from_config(
            openai_then_mock(tmp_path, oa.url, timeouts=timeouts), clock=FakeClock()
        )
        resp = await eng.arun(ask())
        await eng.aclose()
    assert resp.model == "mock/fast"
    assert resp.attempts[0].outcome == "timeout"
    assert ProviderTimeoutError.kind == "timeout"


async def test_is_provider_available(tmp_path: Path) -> None:
    """is_provider_available: enabled providers yes, a provider without its key no."""
    models = MOCK_MODELS.replace(
        "models:\n",
        "  openai:\n    protocol: openai\n    base_url: http://127.0.0.1:9\n"
        "    api_key: ${OPENAI_API_KEY}\nmodels:\n",
        1,
    )
    cfg = write_config(tmp_path / "cfg", models, {"default": "strategy: cost_optimized\n"})
    eng = Engine.from_config(cfg, clock=FakeClock())
    health = await eng.health()
    await eng.aclose()
    assert eng.is_available("mock") and not eng.is_available("openai")
    assert health["providers"]["openai"] == {
        "status": "disabled",
        "reason": "OPENAI_API_KEY is not set",
    }


async def test_health_reports_failure_rate_and_last_ping(tmp_path: Path) -> None:
    """Provider health: status, failure/success rate, latency, pings and last ping time."""
    clock = FakeClock()
    async with FakeOpenAI() as oa:
        eng = Engine.from_config(openai_then_mock(tmp_path, oa.url), clock=clock)
        warmed = await eng.warm()
        clock.advance(15)
        await eng.arun(ask())
        oa.default_fault = Fault(status=500)
        await eng.arun(ask())
        health = await eng.health(detail=True)
        await eng.aclose()
    assert warmed == {"openai": "ok", "mock": "ok"}
    h = health["providers"]["openai"]
    assert h["status"] in ("healthy", "degraded")
    assert (h["requests"], h["error_rate"], h["success_rate"]) == (2, 0.5, 0.5)
    assert h["total_pings"] == 1 and h["ping_failures"] == 0
    assert h["last_ping"] == clock.time() - 15 and h["seconds_since_ping"] == 15


async def test_keep_alive_pings_run_on_the_interval(tmp_path: Path) -> None:
    """Keep-alive pings: warm(keep_alive_s=30) pings every provider again each interval."""
    clock = FakeClock()
    async with FakeOpenAI() as oa:
        eng = Engine.from_config(openai_then_mock(tmp_path, oa.url), clock=clock)
        await eng.warm(keep_alive_s=30)
        for _ in range(500):  # the loop runs on the fake clock; give it a few turns
            if eng.pings.view("openai")["total_pings"] >= 3:
                break
            await asyncio.sleep(0.001)
        health = await eng.health(detail=True)
        await eng.aclose()
    assert 30 in clock.slept
    h = health["providers"]["openai"]
    assert h["total_pings"] >= 3 and h["ping_failures"] == 0


@pytest.mark.parametrize(
    ("fault", "outcome"),
    [
        (Fault(reset=True), "unavailable"),
        (Fault(malformed=True), "protocol_error"),
        (Fault(status=529), "unavailable"),
    ],
)
async def test_connection_and_invalid_response_failures_fall_back(
    tmp_path: Path, fault: Fault, outcome: str
) -> None:
    """Failover triggers: a dropped connection, an unparseable body or overload -> the fallback."""
    async with FakeOpenAI() as oa:
        oa.default_fault = fault
        eng = Engine.from_config(openai_then_mock(tmp_path, oa.url), clock=FakeClock())
        resp = await eng.arun(ask())
        await eng.aclose()
    assert resp.model == "mock/fast"
    assert [a.outcome for a in resp.attempts] == [outcome, "ok"]


async def test_stream_fails_over_before_the_first_token(tmp_path: Path) -> None:
    """Streaming with failover: a provider failing before any token is replaced invisibly."""
    async with FakeOpenAI() as oa:
        oa.default_fault = Fault(status=503)
        eng = Engine.from_config(openai_then_mock(tmp_path, oa.url), clock=FakeClock())
        events = [e async for e in eng.astream(ask("stream after failover"))]
        await eng.aclose()
    assert {e.model for e in events} == {"mock/fast"}
    assert "stream after failover" in "".join(e.content for e in events)
    assert [a.outcome for a in events[-1].attempts] == ["unavailable", "ok"]

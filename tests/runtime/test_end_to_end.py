"""The whole stack: compiled config, real state backends, real adapters over the wire to
the fake upstreams (loopback only), and the built-in mock provider."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import engine
from engine import (
    AllCandidatesFailedError,
    BudgetExceededError,
    ConfigError,
    Engine,
    UnknownModelError,
)
from engine.state.ledger import SQLiteLedger
from engine.testing.clock import FakeClock
from engine.testing.fakes import FakeAnthropic, FakeOpenAI, Fault

ROOT = Path(__file__).resolve().parents[2]
HELLO = {"messages": [{"role": "user", "content": "hello there"}], "max_tokens": 50}


def config(
    openai_url: str, anthropic_url: str, **route: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    models = {
        "providers": {
            "oa": {
                "protocol": "openai",
                "base_url": openai_url,
                "keys": [{"key": "sk-wrong-key-000000"}, {"key": "sk-right-key-111111"}],
            },
            "an": {
                "protocol": "anthropic",
                "base_url": anthropic_url,
                "api_key": "sk-ant-key-2222222",
            },
        },
        "models": {
            "oa/gpt-4o-mini": {
                "capabilities": ["chat", "tools", "streaming"],
                "context_window": 128000,
                "max_output": 16384,
                "input_price": 0.15,
                "output_price": 0.6,
            },
            "an/claude-haiku": {
                "capabilities": ["chat", "tools", "streaming"],
                "context_window": 200000,
                "max_output": 8192,
                "input_price": 0.8,
                "output_price": 4.0,
            },
        },
    }
    routes = {
        "main": {
            "strategy": "ordered",
            "candidates": ["oa/gpt-4o-mini", "an/claude-haiku"],
            "retries": {"max_retries": 1},
            **route,
        }
    }
    return models, routes


async def test_default_config_answers_offline_through_the_mock_provider(tmp_path: Path) -> None:
    """from_config on the shipped config routes to the mock provider and writes the ledger."""
    ledger = tmp_path / "ledger.sqlite3"
    eng = Engine.from_config(ROOT, ledger_path=str(ledger))
    resp = await eng.arun(HELLO)
    assert resp.provider == "mock" and "hello there" in (resp.content or "")
    assert resp.to_openai()["choices"][0]["message"]["content"] == resp.content
    await eng.aclose()
    rows = SQLiteLedger(ledger, FakeClock()).queries.totals(None, 0, "model")
    assert rows[0]["model"] == resp.model


async def test_openai_failure_fails_over_to_anthropic_over_the_wire() -> None:
    """503s from the OpenAI fake are retried, then the Anthropic fake answers."""
    async with FakeOpenAI(api_key="sk-right-key-111111") as oa, FakeAnthropic() as an:
        oa.script([Fault(status=503), Fault(status=503)])
        clock = FakeClock()
        models, routes = config(oa.url, an.url)
        models["providers"]["oa"]["keys"] = [{"key": "sk-right-key-111111"}]
        eng = Engine.from_data(models, routes, clock=clock)
        eng.reload(eng.plan)  # no-op reload keeps working
        resp = await eng.arun(HELLO, policy="main")
        await eng.aclose()
    assert resp.provider == "an" and resp.content
    outcomes = [(a.model, a.outcome) for a in resp.attempts]
    assert outcomes[-1] == ("an/claude-haiku", "ok")
    assert ("oa/gpt-4o-mini", "unavailable") in outcomes
    assert len(clock.slept) >= 1  # backoff went through the injected clock


async def test_rejected_key_is_skipped_for_the_next_key() -> None:
    """The OpenAI fake rejects the first key (401); the same model answers with the second."""
    async with FakeOpenAI(api_key="sk-right-key-111111") as oa, FakeAnthropic() as an:
        models, routes = config(oa.url, an.url)
        eng = Engine.from_data(models, routes, clock=FakeClock())
        resp = await eng.arun(HELLO, policy="main")
        health = await eng.health()
        await eng.aclose()
    assert resp.provider == "oa"
    assert [a.outcome for a in resp.attempts] == ["authentication", "ok"]
    assert "sk-" not in repr(resp.attempts)
    assert health["providers"]["oa"]["status"] == "degraded"


async def test_retry_after_from_the_wire_is_honoured() -> None:
    """A 429 with Retry-After: 2 makes the engine wait 2 s (on the fake clock) and retry."""
    async with FakeOpenAI(api_key="sk-right-key-111111") as oa, FakeAnthropic() as an:
        oa.script([401, Fault(status=429, retry_after=2)])
        clock = FakeClock()
        models, routes = config(oa.url, an.url)
        eng = Engine.from_data(models, routes, clock=clock)
        resp = await eng.arun(HELLO, policy="main")
        await eng.aclose()
    assert resp.provider == "oa" and 2.0 in clock.slept


async def test_streaming_over_the_wire_with_tool_calls() -> None:
    """A streamed tool call from the OpenAI fake arrives reassembled with usage and cost."""
    request = {
        **HELLO,
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                },
            }
        ],
    }
    async with FakeOpenAI() as oa, FakeAnthropic() as an:
        models, routes = config(oa.url, an.url)
        models["providers"]["oa"]["keys"] = [{"key": "sk-right-key-111111"}]
        eng = Engine.from_data(models, routes)
        seen = []
        eng.add_hook("after_response", lambda _req, resp: _append(seen, resp))
        events = [e async for e in eng.astream(request, policy="main")]
        await eng.aclose()
    assert any(e.chunk.tool_calls for e in events)
    assert events[-1].cost_usd is not None and events[-1].cost_usd > 0
    assert seen[0].tool_calls[0].name == "get_weather"


async def _append(seen: list[Any], item: Any) -> None:
    seen.append(item)


async def test_all_upstreams_down_lists_every_attempt() -> None:
    """With both fakes failing, one AllCandidatesFailedError lists each wire attempt."""
    async with FakeOpenAI(api_key="sk-right-key-111111") as oa, FakeAnthropic() as an:
        oa.default_fault = Fault(status=500)
        an.default_fault = Fault(status=529)
        models, routes = config(oa.url, an.url)
        eng = Engine.from_data(models, routes, clock=FakeClock())
        with pytest.raises(AllCandidatesFailedError) as info:
            await eng.arun(HELLO, policy="main")
        await eng.aclose()
    models_tried = {a.model for a in info.value.attempts}
    assert models_tried == {"oa/gpt-4o-mini", "an/claude-haiku"}


async def test_providers_and_models_can_be_added_and_removed_at_run_time() -> None:
    """add_provider/add_model recompile and swap; an invalid change leaves the plan as it was."""
    eng = Engine.from_data(
        {
            "providers": {"mock": {"protocol": "mock"}},
            "models": {"mock/fast": {"quality": 0.4, "context_window": 8000}},
        },
        {"main": {"strategy": "ordered", "candidates": ["mock/fast"]}},
    )
    eng.add_provider("mock2", {"protocol": "mock", "options": {"latency_ms": "0"}})
    eng.add_model(
        "mock2/extra",
        {"capabilities": ["chat"], "input_price": 0, "output_price": 0, "context_window": 8000},
    )
    assert "mock2/extra" in eng.list_models()
    resp = await eng.arun({**HELLO, "model": "mock2/extra"})
    assert resp.model == "mock2/extra"
    before = eng.plan
    with pytest.raises(ConfigError):
        eng.remove_model("mock/fast")  # the route still names it
    assert eng.plan is before
    with pytest.raises(ConfigError):
        eng.add_provider("mock2", {"protocol": "mock"})
    with pytest.raises(UnknownModelError):
        eng.remove_provider("nope")
    eng.remove_provider("mock2")
    assert eng.list_models() == ["mock/fast"]
    await eng.aclose()


async def test_concurrent_requests_never_overspend_a_workspace_budget() -> None:
    """Many concurrent calls against a daily budget: spend stays within it, extras refused."""
    eng = Engine.from_data(
        {
            "providers": {"mock": {"protocol": "mock", "options": {"latency_ms": "1"}}},
            "models": {
                "mock/paid": {
                    "input_price": 1000.0,
                    "output_price": 1000.0,
                    "max_output": 100,
                    "context_window": 8000,
                }
            },
        },
        {
            "main": {
                "strategy": "ordered",
                "candidates": ["mock/paid"],
                "budget": {"daily_usd": 1.0},
            }
        },
    )
    request = {**HELLO, "max_tokens": 100, "metadata": {"workspace": "team"}}
    results = await asyncio.gather(
        *(eng.arun(request, policy="main") for _ in range(40)), return_exceptions=True
    )
    served = [r for r in results if isinstance(r, engine.Response)]
    refused = [r for r in results if isinstance(r, BudgetExceededError)]
    assert served and refused and len(served) + len(refused) == 40
    spent = eng.spent("team")
    assert spent["day"] <= 1.0 + 1e-9
    assert sum(r.cost_usd or 0 for r in served) == pytest.approx(spent["day"])
    await eng.aclose()


def test_module_level_api_uses_engine_config(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """engine.run / engine.stream use the config named by $ENGINE_CONFIG."""
    monkeypatch.setenv("ENGINE_CONFIG", str(ROOT))
    monkeypatch.setenv("ENGINE_LEDGER", str(tmp_path / "l.sqlite3"))
    monkeypatch.setattr("engine.assemble._default", None)
    resp = engine.run(HELLO)
    assert resp.provider == "mock"
    text = "".join(e.content for e in engine.stream({**HELLO, "cache": False}))
    assert "hello there" in text
    assert engine.explain(HELLO, "cost_optimized")["policy"] == "cost_optimized"
    engine.default_engine().close()


async def test_rate_limit_status_lists_keys_before_traffic_and_hides_secrets() -> None:
    """rate_limit_status shows every key label (never the key) before the first request."""
    models, routes = config("http://127.0.0.1:9/v1", "http://127.0.0.1:9")
    models["providers"]["oa"]["keys"][0]["rpm"] = 60
    eng = Engine.from_data(models, routes)
    status = eng.rate_limit_status("oa")
    assert set(status["keys"]) == {"oa#0", "oa#1"}
    assert status["keys"]["oa#0"]["requests"]["limit"] == 60
    assert "sk-" not in repr(status)
    await eng.aclose()


async def test_active_health_probe_reports_an_unreachable_provider() -> None:
    """health(probe=True) marks a provider whose port refuses connections as unhealthy."""
    async with FakeAnthropic() as an:
        models, routes = config("http://127.0.0.1:9/v1", an.url)
        eng = Engine.from_data(models, routes)
        health = await eng.health(probe=True)
        await eng.aclose()
    assert health["providers"]["an"]["status"] == "healthy"
    assert health["providers"]["oa"]["status"] == "unhealthy"
    assert "the latest ping failed" in health["providers"]["oa"]["reason"]


async def test_budgets_are_restored_from_the_ledger_on_start(tmp_path: Path) -> None:
    """A new engine on the same SQLite ledger starts with the month's spend already counted."""
    models = {
        "providers": {"mock": {"protocol": "mock"}},
        "models": {
            "mock/paid": {
                "input_price": 1000.0,
                "output_price": 1000.0,
                "max_output": 100,
                "context_window": 8000,
            }
        },
    }
    routes = {
        "main": {"strategy": "ordered", "candidates": ["mock/paid"], "budget": {"daily_usd": 5.0}}
    }
    request = {**HELLO, "metadata": {"workspace": "team"}}
    path = tmp_path / "ledger.sqlite3"
    first = Engine.from_data(
        models, routes, ledger=SQLiteLedger(path, FakeClock()), clock=FakeClock()
    )
    resp = await first.arun(request, policy="main")
    await first.aclose()
    second = Engine.from_data(
        models, routes, ledger=SQLiteLedger(path, FakeClock()), clock=FakeClock()
    )
    assert second.spent("team")["day"] == pytest.approx(resp.cost_usd)
    await second.aclose()


def test_from_config_engine_can_add_a_provider_and_converse(tmp_path: Path) -> None:
    """A file-configured engine takes a new provider and model at run time (sync API)."""
    eng = Engine.from_config(ROOT, ledger_path=str(tmp_path / "l.sqlite3"))
    eng.add_provider("extra", {"protocol": "mock", "options": {"latency_ms": "0"}})
    eng.add_model(
        "extra/echo",
        {"capabilities": ["chat"], "context_window": 8000, "input_price": 0, "output_price": 0},
    )
    chat = eng.conversation(model="extra/echo")
    first = chat.send("my name is Alice")
    chat.send("what is my name?")
    assert first.model == "extra/echo" and len(chat.messages) == 4
    assert "extra" in eng.list_providers() and "openai/gpt-4o" in eng.list_models("openai")
    eng.close()


async def test_cancelling_a_stalled_upstream_call_releases_everything() -> None:
    """Cancelling a call stuck on a stalled upstream frees its lease and its reservation."""
    async with FakeOpenAI(api_key="sk-right-key-111111") as oa, FakeAnthropic() as an:
        oa.default_fault = Fault(stall=True)
        models, routes = config(oa.url, an.url, budget={"daily_usd": 10.0})
        models["providers"]["oa"]["keys"] = [{"key": "sk-right-key-111111"}]
        eng = Engine.from_data(models, routes)
        task = asyncio.create_task(eng.arun({**HELLO, "metadata": {"workspace": "w"}}, "main"))
        while not oa.requests:
            await asyncio.sleep(0.005)
        assert eng.spent("w")["day"] > 0  # the worst case is reserved while in flight
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.01)
        assert eng.spent("w")["day"] == 0.0
        assert eng.rate_limit_status("oa")["keys"]["oa#0"]["in_flight"] == 0
        await eng.aclose()

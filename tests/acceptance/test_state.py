"""Seed features: response cache (TTL, bypass, clear), rate limits with remaining/limit,
several API keys pooled, queue size, cost tracking per provider/model/workspace and per
day, usage statistics with error rates."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from engine import AllCandidatesFailedError, BudgetExceededError, Engine
from engine.cli import main
from engine.state.ledger import SQLiteLedger
from engine.testing.clock import FakeClock
from engine.testing.fakes import FakeOpenAI, Fault
from tests.acceptance.conftest import MOCK_MODELS, ask, write_config


def cached_engine(tmp_path: Path, clock: FakeClock) -> Engine:
    route = "strategy: ordered\ncandidates: [mock/fast]\ncache: {enabled: true, ttl_s: 3600}\n"
    cfg = write_config(tmp_path / "cfg", MOCK_MODELS, {"default": route})
    return Engine.from_config(cfg, clock=clock)


async def test_cache_serves_repeats_until_the_ttl_expires(tmp_path: Path) -> None:
    """Response caching: a repeat is a free cache hit; after the TTL it is asked again."""
    clock = FakeClock()
    eng = cached_engine(tmp_path, clock)
    first = await eng.arun(ask("Explain quantum computing"))
    again = await eng.arun(ask("Explain quantum computing"))
    clock.advance(3601)
    expired = await eng.arun(ask("Explain quantum computing"))
    stats = eng.stats()["totals"]
    await eng.aclose()
    assert not first.cached and again.cached and not expired.cached
    assert again.content == first.content and again.cost_usd == 0
    assert stats["cache_hits"] == 1 and stats["requests"] == 3


async def test_cache_bypass_per_request_and_clear(tmp_path: Path) -> None:
    """Cache control: `cache: false` on a request skips it; cache.clear() empties it."""
    eng = cached_engine(tmp_path, FakeClock())
    await eng.arun(ask("same question"))
    bypass = await eng.arun(ask("same question", cache=False))
    await eng.cache.clear()
    after_clear = await eng.arun(ask("same question"))
    hit = await eng.arun(ask("same question"))
    await eng.aclose()
    assert not bypass.cached and not after_clear.cached and hit.cached


async def test_cache_size_is_bounded_by_the_policy(tmp_path: Path) -> None:
    """Cache size: `max_entries` bounds the cache; the least recently used answer goes first."""
    route = (
        "strategy: ordered\ncandidates: [mock/fast]\n"
        "cache: {enabled: true, ttl_s: 3600, max_entries: 2}\n"
    )
    cfg = write_config(tmp_path / "cfg", MOCK_MODELS, {"default": route})
    eng = Engine.from_config(cfg, clock=FakeClock())
    for text in ("one", "two", "three"):
        await eng.arun(ask(text))
    evicted = await eng.arun(ask("one"))
    kept = await eng.arun(ask("three"))
    await eng.aclose()
    assert not evicted.cached and kept.cached


async def test_cached_answer_replays_as_a_stream(tmp_path: Path) -> None:
    """Caching with streaming: a cached answer can be streamed back."""
    eng = cached_engine(tmp_path, FakeClock())
    first = await eng.arun(ask("stream it back"))
    events = [e async for e in eng.astream(ask("stream it back"))]
    await eng.aclose()
    assert "".join(e.content for e in events) == first.content
    assert events[-1].cached


def keyed(tmp_path: Path, url: str, limits: str, route_extra: str = "") -> Path:
    models = f"""
providers:
  openai:
    protocol: openai
    base_url: {url}
    keys:
      - {{key: sk-acc-key-one-0007, {limits}}}
      - {{key: sk-acc-key-two-0008, {limits}}}
models:
  openai/gpt-4o-mini:
    capabilities: [chat]
    context_window: 128000
    input_price: 0.15
    output_price: 0.6
"""
    route = "strategy: ordered\ncandidates: [openai/gpt-4o-mini]\nretries: {max_retries: 0}\n"
    return write_config(tmp_path / "cfg", models, {"default": route + route_extra})


async def test_several_keys_are_pooled_and_limits_reported(tmp_path: Path) -> None:
    """Multiple API keys: requests spread over the pool; status shows remaining/limit per key."""
    clock = FakeClock()
    async with FakeOpenAI() as oa:
        cfg = keyed(tmp_path, oa.url, "rpm: 2", "rate_limit: {on_limited: skip}\n")
        eng = Engine.from_config(cfg, clock=clock)
        for i in range(4):
            await eng.arun(ask(f"q{i}"))
        status = eng.rate_limit_status("openai")
        with pytest.raises(AllCandidatesFailedError) as info:
            await eng.arun(ask("one too many"))
        clock.advance(61)
        await eng.arun(ask("next minute"))
        await eng.aclose()
    used = [r.headers["authorization"] for r in oa.requests[:4]]
    assert sorted(used) == ["Bearer sk-acc-key-one-0007"] * 2 + ["Bearer sk-acc-key-two-0008"] * 2
    assert len(oa.requests) == 5  # the refused call never reached the wire
    assert [a.outcome for a in info.value.attempts] == ["rate_limited"]
    keys = status["keys"]
    assert len(keys) == 2
    for view in keys.values():
        assert view["requests"]["limit"] == 2 and view["requests"]["remaining"] == 0
    assert "sk-acc-key" not in json.dumps(status)


async def test_limits_learned_from_provider_headers(tmp_path: Path) -> None:
    """Rate limit detection: the provider's x-ratelimit headers show up in the status."""
    async with FakeOpenAI() as oa:
        oa.default_fault = Fault(
            headers={"x-ratelimit-limit-requests": "500", "x-ratelimit-remaining-requests": "123"}
        )
        cfg = keyed(tmp_path, oa.url, "rpm: 1000")
        eng = Engine.from_config(cfg, clock=FakeClock())
        await eng.arun(ask())
        status = eng.rate_limit_status("openai")
        await eng.aclose()
    views = [v["requests"] for v in status["keys"].values()]
    assert {"limit": 500, "remaining": 123} in [
        {"limit": v["limit"], "remaining": v["remaining"]} for v in views
    ]


class GatedClock(FakeClock):
    """A fake clock whose sleeps wait until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        await self.gate.wait()
        self.advance(max(seconds, 0.0))


async def test_queue_size_shows_requests_waiting_for_a_key(tmp_path: Path) -> None:
    """Pool status: a request waiting for rate-limit headroom is counted as queued."""
    clock = GatedClock()
    async with FakeOpenAI() as oa:
        cfg = keyed(
            tmp_path, oa.url, "rpm: 1", "rate_limit: {on_limited: wait, max_wait_ms: 120000}\n"
        )
        eng = Engine.from_config(cfg, clock=clock)
        await eng.arun(ask("a"))
        await eng.arun(ask("b"))
        waiting = asyncio.ensure_future(eng.arun(ask("c")))
        for _ in range(100):
            await asyncio.sleep(0)
            if eng.rate_limit_status("openai")["queued"]:
                break
        queued = eng.rate_limit_status("openai")["queued"]
        clock.gate.set()
        answered = await waiting
        after = eng.rate_limit_status("openai")["queued"]
        await eng.aclose()
    assert (queued, after) == (1, 0)
    assert answered.content and len(oa.requests) == 3


async def test_costs_by_model_provider_workspace_and_day(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Cost tracking: the costs command totals spend per model/provider, workspace and day."""
    route = "strategy: ordered\ncandidates: [mock/smart, mock/fast]\n"
    cfg = write_config(tmp_path / "cfg", MOCK_MODELS, {"default": route})
    ledger = tmp_path / "ledger.sqlite3"
    eng = Engine.from_config(cfg)
    paid = [await eng.arun(ask(f"acme {i}", metadata={"workspace": "acme"})) for i in range(3)]
    other = await eng.arun(ask("other", metadata={"workspace": "globex"}))
    pinned = await eng.arun(ask("pinned", model="mock/fast", metadata={"workspace": "acme"}))
    await eng.aclose()
    base = ["costs", "--ledger", str(ledger), "--format", "json"]
    assert main([*base, "--workspace", "acme", "--by", "model"]) == 0
    by_model = json.loads(capsys.readouterr().out)
    assert main([*base, "--by", "provider", "--period", "month"]) == 0
    by_provider = json.loads(capsys.readouterr().out)
    models = {r["model"]: r for r in by_model["totals"]}
    assert models["mock/smart"]["attempts"] == 3 and models["mock/fast"]["attempts"] == 1
    assert by_model["total"]["cost_usd"] == pytest.approx(
        sum(r.cost_usd or 0 for r in [*paid, pinned])
    )
    assert by_provider["total"]["cost_usd"] == pytest.approx(
        sum(r.cost_usd or 0 for r in [*paid, pinned, other])
    )
    (today,) = by_model["daily"]
    assert today["cost_usd"] == pytest.approx(by_model["total"]["cost_usd"])
    assert main([*base[:-2], "--workspace", "acme"]) == 0
    assert "mock/smart" in capsys.readouterr().out


async def test_usage_statistics_per_provider_and_model(tmp_path: Path) -> None:
    """Statistics: totals (requests, cost, tokens, fallbacks) and per provider/model error rates."""
    async with FakeOpenAI() as oa:
        models = MOCK_MODELS.replace(
            "models:\n",
            f"  openai:\n    protocol: openai\n    base_url: {oa.url}\n    api_key: sk-acc-0009\n"
            "models:\n  openai/gpt-4o-mini:\n    capabilities: [chat]\n"
            "    context_window: 128000\n    input_price: 0.15\n    output_price: 0.6\n",
            1,
        )
        route = (
            "strategy: ordered\ncandidates: [openai/gpt-4o-mini, mock/fast]\n"
            "retries: {max_retries: 0}\n"
        )
        eng = Engine.from_config(
            write_config(tmp_path / "cfg", models, {"default": route}), clock=FakeClock()
        )
        oa.script([Fault(status=500)])
        answers = [await eng.arun(ask(f"q{i}")) for i in range(4)]
        stats = eng.stats()
        await eng.aclose()
    totals = stats["totals"]
    assert (totals["requests"], totals["successes"], totals["fallbacks"]) == (4, 4, 1)
    assert totals["cost_usd"] == pytest.approx(sum(a.cost_usd or 0 for a in answers))
    assert totals["total_tokens"] == sum(a.usage.total_tokens for a in answers)
    openai = stats["providers"]["openai"]
    assert (openai["requests"], openai["failures"], openai["error_rate"]) == (4, 1, 0.25)
    assert stats["models"]["mock/fast"]["requests"] == 1
    assert openai["latency_p50_ms"] == 0.0  # measured on the FakeClock, where no time passes


async def test_workspace_costs_from_python(tmp_path: Path) -> None:
    """Workspace costs in code: the ledger answers totals by model and a daily breakdown."""
    clock = FakeClock()
    ledger_path = tmp_path / "ledger.sqlite3"
    route = "strategy: ordered\ncandidates: [mock/smart]\n"
    eng = Engine.from_config(
        write_config(tmp_path / "cfg", MOCK_MODELS, {"default": route}), clock=clock
    )
    spent = [
        await eng.arun(ask(f"w {i}", metadata={"workspace": "workspace-123"})) for i in range(2)
    ]
    await eng.arun(ask("elsewhere", metadata={"workspace": "other"}))
    await eng.aclose()
    ledger = SQLiteLedger(str(ledger_path), clock)
    since = clock.time() - 30 * 86400
    (row,) = await ledger.totals("workspace-123", since, "model")
    (day,) = await ledger.daily("workspace-123", since)
    assert row["model"] == "mock/smart" and row["attempts"] == 2
    assert row["cost_usd"] == pytest.approx(sum(r.cost_usd or 0 for r in spent))
    assert day["cost_usd"] == pytest.approx(row["cost_usd"])


async def test_workspace_daily_budget_stops_spending(tmp_path: Path) -> None:
    """Budget management: a workspace's daily budget refuses calls once spent, others go on."""
    clock = FakeClock()
    route = "strategy: ordered\ncandidates: [mock/smart]\nbudget: {daily_usd: 0.01}\n"
    cfg = write_config(tmp_path / "cfg", MOCK_MODELS, {"default": route})
    eng = Engine.from_config(cfg, clock=clock)
    spent = 0.0
    with pytest.raises(BudgetExceededError, match="acme"):
        for i in range(100):
            spent += (await eng.arun(ask(f"q{i}", metadata={"workspace": "acme"}))).cost_usd or 0
    other = await eng.arun(ask("still fine", metadata={"workspace": "globex"}))
    clock.advance(86400)
    next_day = await eng.arun(ask("a new day", metadata={"workspace": "acme"}))
    await eng.aclose()
    assert 0 < spent <= 0.01
    assert other.content and next_day.content

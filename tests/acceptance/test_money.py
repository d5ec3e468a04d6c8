"""Money that adds up: prices at the call's time, cached and reasoning tokens priced as the
providers bill them, and the breakdown shown by the Response, the ledger, `engine costs`
and the server's headers."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from engine import Engine
from engine.cli import main
from engine.compile import load_plan
from engine.pricing import parse_as_of
from engine.server.settings import ServerSettings
from engine.state.ledger import NullLedger
from engine.state.ledger_file import open_ledger
from engine.testing.clock import FakeClock
from engine.testing.fakes import ExtraUsage, FakeAnthropic, FakeOpenAI
from tests.acceptance.conftest import ROOT, ask, shipped_config, write_config
from tests.server.conftest import serving

#: Claude Haiku 4.5 per 1M tokens: input 1, cache read 0.1, cache write 1.25, output 5.
HAIKU = (1.0, 0.1, 1.25, 5.0)


def haiku_config(tmp_path: Path, url: str, as_of: str | None = "2026-12-01") -> Path:
    pinned = f"prices_as_of: {as_of}\n" if as_of else ""
    models = f"""{pinned}providers:
  anthropic:
    protocol: anthropic
    base_url: {url}
    api_key: sk-ant-money-0001
models:
  anthropic/claude-haiku-4-5:
    capabilities: [chat, streaming]
"""
    return write_config(
        tmp_path / "cfg", models, {"default": "candidates: [anthropic/claude-haiku-4-5]\n"}
    )


def expected(inp: int, read: int, write: int, out: int) -> float:
    i, r, w, o = HAIKU
    return ((inp - read - write) * i + read * r + write * w + out * o) / 1e6


async def test_cache_reads_and_writes_are_billed_at_their_prices(tmp_path: Path) -> None:
    """An Anthropic answer with cache reads and writes costs what the provider bills
    (cache reads at a tenth of the input price), and every surface shows the breakdown."""
    async with FakeAnthropic() as up:
        up.extra_usage = ExtraUsage(cache_read=1000, cache_write=200)
        eng = Engine.from_config(haiku_config(tmp_path, up.url))
        resp = await eng.arun(ask())
        await eng.aclose()
    u = resp.usage
    assert (u.cache_read_tokens, u.cache_write_tokens) == (1000, 200)
    assert u.input_tokens > 1200  # the whole prompt, cached parts included
    want = expected(u.input_tokens, 1000, 200, u.output_tokens)
    assert resp.cost_usd == pytest.approx(want)
    naive = (u.input_tokens * HAIKU[0] + u.output_tokens * HAIKU[3]) / 1e6
    assert resp.cost_usd < naive * 0.6  # no longer every prompt token at the input price
    parts = resp.cost_breakdown
    assert parts is not None
    assert parts.cache_read_usd == pytest.approx(1000 * 0.1 / 1e6)
    assert parts.cache_write_usd == pytest.approx(200 * 1.25 / 1e6)
    assert resp.to_openai()["usage"]["prompt_tokens_details"] == {"cached_tokens": 1000}


def test_engine_costs_shows_the_token_breakdown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The ledger keeps cache reads, cache writes and reasoning; `engine costs` shows them."""
    with FakeAnthropic.in_thread() as up:
        up.extra_usage = ExtraUsage(cache_read=800, cache_write=100)
        eng = Engine.from_config(haiku_config(tmp_path, up.url))
        resp = eng.run(ask())
        eng.close()
    assert main(["costs", "--config", str(tmp_path / "cfg"), "--format", "json"]) == 0
    total = json.loads(capsys.readouterr().out)["total"]
    assert (total["cache_read_tokens"], total["cache_write_tokens"]) == (800, 100)
    assert total["reasoning_tokens"] == 0  # Anthropic counts thinking inside output_tokens
    assert total["cost_usd"] == pytest.approx(resp.cost_usd)
    assert main(["costs", "--config", str(tmp_path / "cfg")]) == 0
    table = capsys.readouterr().out
    assert "cache read" in table and "cache write" in table and "reasoning" in table


#: One call per API the server speaks (each takes the same path through the server).
API_CALLS = {
    "/v1/chat/completions": {"model": "default", **ask()},
    "/v1/messages": {"model": "default", **ask()},
    "/v1/responses": {"model": "default", "input": "hello there", "max_output_tokens": 50},
}


async def test_server_header_carries_the_cost_breakdown(tmp_path: Path) -> None:
    """x-engine-cost-breakdown splits x-engine-cost-usd by kind of token, on every API."""
    async with FakeAnthropic() as up:
        up.extra_usage = ExtraUsage(cache_read=1000)
        eng = Engine.from_config(haiku_config(tmp_path, up.url), ledger=NullLedger())
        async with serving(eng, ServerSettings(config_dir=tmp_path / "cfg")) as running:
            http = running.http()
            answers = {path: await http.post(path, json=body) for path, body in API_CALLS.items()}
            await http.aclose()
        await eng.aclose()
    for path, r in answers.items():
        assert r.status_code == 200, (path, r.text)
        parts = dict(p.split("=") for p in r.headers["x-engine-cost-breakdown"].split(", "))
        assert set(parts) == {"input", "cache_read", "cache_write", "output"}
        assert float(parts["cache_read"]) == pytest.approx(1000 * 0.1 / 1e6, abs=1e-8)
        assert sum(map(float, parts.values())) == pytest.approx(
            float(r.headers["x-engine-cost-usd"]), abs=1e-7
        )
    usage = answers["/v1/chat/completions"].json()["usage"]
    assert usage["prompt_tokens_details"] == {"cached_tokens": 1000}


def mistral_config(tmp_path: Path, url: str, as_of: str | None) -> Path:
    pinned = f"prices_as_of: {as_of}\n" if as_of else ""
    models = f"""{pinned}providers:
  mistral:
    protocol: openai
    base_url: {url}
    api_key: sk-money-mistral-0002
models:
  mistral/mistral-small-latest:
    capabilities: [chat]
    context_window: 32000
"""
    return write_config(
        tmp_path / "cfg", models, {"default": "candidates: [mistral/mistral-small-latest]\n"}
    )


@pytest.mark.parametrize(
    ("clock_day", "as_of", "per_m"),
    [
        ("2026-01-01", None, (0.10, 0.30)),  # before the March 2026 price change
        ("2026-12-01", None, (0.15, 0.60)),  # after it: the call's own time decides
        ("2026-12-01", "2026-01-01", (0.10, 0.30)),  # pinned for reproducible tests
    ],
)
async def test_each_call_is_priced_at_its_own_time(
    tmp_path: Path, clock_day: str, as_of: str | None, per_m: tuple[float, float]
) -> None:
    """mistral-small-latest costs $0.75 per 1M in+out since March 2026, not the frozen $0.40."""
    async with FakeOpenAI() as up:
        up.extra_usage = ExtraUsage(reasoning=40)  # billed as output, shown apart
        clock = FakeClock(parse_as_of(clock_day) or 0.0)
        eng = Engine.from_config(mistral_config(tmp_path, up.url, as_of), clock=clock)
        resp = await eng.arun(ask())
        await eng.aclose()
    u = resp.usage
    assert u.reasoning_tokens == 40 and u.output_tokens > 40
    assert resp.cost_usd == pytest.approx(
        (u.input_tokens * per_m[0] + u.output_tokens * per_m[1]) / 1e6
    )


def test_shipped_plan_ranks_by_the_prices_in_force(tmp_path: Path) -> None:
    """The shipped registry compiles mistral-small-latest at the prices in force (0.15/0.60
    per 1M since March 2026), not at the 0.10/0.30 of a date frozen in the code."""
    cfg = shipped_config(tmp_path / "shipped")
    models = cfg / "models.yaml"
    models.write_text("prices_as_of: 2026-12-01\n" + models.read_text())
    model = load_plan(cfg)[0].models["mistral/mistral-small-latest"]
    assert (model.input_price, model.output_price) == (0.15, 0.6)
    now = load_plan(ROOT)[0].models["mistral/mistral-small-latest"]
    assert now.prices is not None
    assert now.input_price == now.prices.rates_at(time.time()).input


async def test_an_attempt_that_never_left_costs_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A refused connection is recorded at $0, not as an attempt of unknown cost."""
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()  # nothing listens there: connection refused
    async with FakeAnthropic() as up:
        models = f"""prices_as_of: 2026-12-01
providers:
  dead:
    protocol: openai
    base_url: http://127.0.0.1:{port}/v1
    api_key: sk-money-dead-0003
  anthropic:
    protocol: anthropic
    base_url: {up.url}
    api_key: sk-ant-money-0004
models:
  dead/gpt-4o-mini:
    capabilities: [chat]
    context_window: 128000
    input_price: 0.15
    output_price: 0.6
  anthropic/claude-haiku-4-5:
    capabilities: [chat]
"""
        route = (
            "strategy: ordered\n"
            "candidates: [dead/gpt-4o-mini, anthropic/claude-haiku-4-5]\n"
            "retries: {max_retries: 0}\n"
        )
        cfg = write_config(tmp_path / "cfg", models, {"default": route})
        eng = Engine.from_config(cfg)
        resp = await eng.arun(ask())
        await eng.aclose()
    assert resp.attempts[0].outcome == "unavailable" and resp.provider == "anthropic"
    assert main(["costs", "--config", str(cfg), "--by", "provider", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    dead_row = next(r for r in report["totals"] if r["provider"] == "dead")
    assert dead_row["cost_usd"] == 0.0 and dead_row["unknown_cost"] == 0
    assert report["total"]["unknown_cost"] == 0
    assert main(["costs", "--config", str(cfg), "--by", "provider"]) == 0
    assert "unknown" not in capsys.readouterr().out


def streaming_config(tmp_path: Path, url: str) -> Path:
    models = f"""prices_as_of: 2026-12-01
providers:
  openai:
    protocol: openai
    base_url: {url}
    api_key: sk-money-stream-0005
models:
  openai/gpt-4o-mini:
    capabilities: [chat, streaming]
"""
    route = "candidates: [openai/gpt-4o-mini]\nbudget: {daily_usd: 10}\nretries: {max_retries: 0}\n"
    return write_config(tmp_path / "cfg", models, {"default": route})


LONG_ASK = {
    "messages": [{"role": "user", "content": "Tell me a long story about the sea. " * 40}],
    "max_tokens": 400,
    "stream": True,
    "metadata": {"workspace": "acme"},
}


async def _cancelled_cost(eng: Engine, cfg: Path) -> tuple[dict[str, Any], dict[str, float]]:
    """The ledger's rows by outcome, and the workspace's spend, once the engine closed."""
    background = list(eng._svc.background)  # type: ignore[attr-defined]
    if background:  # an abandoned stream settles in a task of its own
        await asyncio.gather(*background)
    spent = dict(await eng._svc.budget.spent("acme"))  # type: ignore[attr-defined]
    await eng.aclose()
    ledger = open_ledger(os.environ["ENGINE_LEDGER"])
    rows = {r["outcome"]: dict(r) for r in ledger.totals(None, 0.0, "outcome")}
    return rows, spent


async def test_an_abandoned_stream_is_billed_for_what_was_sent(tmp_path: Path) -> None:
    """A client that reads one chunk and stops: the attempt is billed at the estimated
    input plus the output streamed so far (it was recorded at $0 and its reservation
    returned, so start-read-disconnect was free)."""
    async with FakeOpenAI() as up:
        cfg = streaming_config(tmp_path, up.url)
        eng = Engine.from_config(cfg)
        events = eng.astream(LONG_ASK)
        first = await anext(events)
        await events.aclose()
        assert first.content
        rows, spent = await _cancelled_cost(eng, cfg)
    cancelled = rows["cancelled"]
    assert cancelled["input_tokens"] > 0 and cancelled["output_tokens"] > 0
    assert cancelled["cost_usd"] > 0 and cancelled["unknown_cost"] == 0
    assert sum(spent.values()) == pytest.approx(2 * cancelled["cost_usd"])  # day + month


async def test_a_stream_cut_by_the_upstream_is_billed_for_what_was_sent(tmp_path: Path) -> None:
    """The upstream drops the connection mid-stream: the try still costs the estimated
    input plus the output it sent, and the workspace budget keeps that spend."""
    from engine.errors import EngineError
    from engine.testing.fakes import Fault

    async with FakeOpenAI() as up:
        up.default_fault = Fault(reset_after=3)
        cfg = streaming_config(tmp_path, up.url)
        eng = Engine.from_config(cfg)
        got = []
        with pytest.raises(EngineError):
            async for event in eng.astream(LONG_ASK):
                got.append(event)
        assert got
        rows, spent = await _cancelled_cost(eng, cfg)
    failed = next(r for outcome, r in rows.items() if outcome != "ok")
    assert failed["output_tokens"] > 0 and failed["cost_usd"] > 0
    assert sum(spent.values()) == pytest.approx(2 * failed["cost_usd"])

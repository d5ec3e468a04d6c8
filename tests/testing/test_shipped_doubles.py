"""The test doubles shipped in engine.testing, driven through the public Engine API."""

from __future__ import annotations

import pytest

from engine import Engine
from engine.endpoints import Endpoint
from engine.errors import UnavailableError
from engine.messages import Chunk, Request, Usage
from engine.state.budget import InProcessBudgetStore
from engine.state.ratelimit import InProcessRateLimiter
from engine.testing.adapter import Outcome, ScriptedAdapter, by_model
from engine.testing.clock import FakeClock
from engine.testing.ledger import CapturingLedger
from engine.testing.recording import RecordingBudgetStore, RecordingRateLimiter

MODELS = {
    "providers": {
        "a": {
            "protocol": "openai",
            "base_url": "http://127.0.0.1:9/v1",
            "api_key": "sk-test-aaaa1111",
        },
        "b": {
            "protocol": "openai",
            "base_url": "http://127.0.0.1:9/v1",
            "api_key": "sk-test-bbbb2222",
        },
    },
    "models": {
        "a/one": {"context_window": 8000, "input_price": 1.0, "output_price": 2.0},
        "b/two": {"context_window": 8000, "input_price": 1.0, "output_price": 2.0},
    },
}
ROUTES = {
    "main": {
        "strategy": "ordered",
        "candidates": ["a/one", "b/two"],
        "budget": {"daily_usd": 10.0},
    }
}
HELLO = {"messages": [{"role": "user", "content": "hello"}], "metadata": {"workspace": "w"}}


def engine(adapter: ScriptedAdapter, **state: object) -> Engine:
    return Engine.from_data(
        MODELS, ROUTES, adapters={"openai": adapter}, clock=FakeClock(), **state
    )


async def test_a_handler_function_answers_and_fails_over() -> None:
    """The handler decides per request (as MockTransport's); a raised error fails over."""

    def handler(request: Request, endpoint: Endpoint) -> Outcome:
        if endpoint.provider == "a":
            return UnavailableError("down", provider="a")
        return f"{endpoint.upstream_model} heard {request.messages[0].text()}"

    adapter = ScriptedAdapter(handler)
    eng = engine(adapter)
    resp = await eng.arun(HELLO, policy="main")
    await eng.aclose()
    assert resp.content == "two heard hello" and resp.model == "b/two"
    assert adapter.models()[0] == "one" and adapter.models()[-1] == "two" and adapter.closed


async def test_streams_come_from_strings_or_chunks_with_a_cut() -> None:
    """A string streams as text then usage; a chunk list may break mid-way, which reaches
    the caller after the text already sent."""
    adapter = ScriptedAdapter(by_model({"one": ["whole"]}))
    eng = engine(adapter)
    events = [e async for e in eng.astream(HELLO, policy="main")]
    assert "".join(e.chunk.content for e in events) == "whole" and adapter.calls[-1].stream
    assert events[-1].chunk.usage == Usage(10, 5)
    adapter.handler = by_model({"one": [[Chunk(content="par"), UnavailableError("cut")]]})
    seen: list[str] = []
    with pytest.raises(UnavailableError, match="cut"):
        async for event in eng.astream(HELLO, policy="main"):
            seen.append(event.chunk.content)
    await eng.aclose()
    assert seen == ["par"]


async def test_recording_wrappers_see_every_call_in_order() -> None:
    """The recording limiter and budget keep the backend's behaviour and log each call;
    the capturing ledger keeps every row; nothing is left held after the call."""
    clock = FakeClock()
    limiter = RecordingRateLimiter(InProcessRateLimiter(clock))
    budget = RecordingBudgetStore(InProcessBudgetStore(clock))
    ledger = CapturingLedger()
    adapter = ScriptedAdapter(lambda request, endpoint: "fine")
    eng = engine(adapter, rate_limiter=limiter, budget=budget, ledger=ledger)
    resp = await eng.arun(HELLO, policy="main")
    assert await eng.aspent("w") == {"day": resp.cost_usd, "month": resp.cost_usd}
    await eng.aclose()
    # a route with a budget reserves, so it takes the awaited path, not the fast one
    assert limiter.methods() == ["register", "register", "acquire", "settle", "aclose"]
    assert budget.methods() == ["restore", "reserve", "settle", "spent", "aclose"]
    assert limiter.open_leases == 0 and budget.open_reservations == 0
    assert [(r.model, r.outcome) for r in ledger.where(workspace="w")] == [("a/one", "ok")]

"""Seed features: model registry queries, config as code and run-time registration,
fastest-response routing that learns, latency caps, token-per-minute limits, metrics export."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from engine import AllCandidatesFailedError, Engine, EngineError, Request
from engine.endpoints import Endpoint
from engine.messages import Chunk, ProviderResponse
from engine.providers import get_adapter
from engine.testing.clock import FakeClock
from tests.acceptance.conftest import MOCK_MODELS, ask, write_config


def registry_engine(tmp_path: Path) -> Engine:
    cfg = write_config(tmp_path / "cfg", MOCK_MODELS, {"default": "strategy: cost_optimized\n"})
    return Engine.from_config(cfg, clock=FakeClock())


async def test_registry_queries(tmp_path: Path) -> None:
    """Model registry: one model's config, list, find under a price, cheapest, fastest."""
    eng = registry_engine(tmp_path)
    config = eng.model_config("mock/smart")
    await eng.aclose()
    assert (config.input_price, config.output_price, config.max_output) == (5, 15, 4000)
    assert config.context_window == 200000 and "reasoning" in config.capabilities
    assert eng.list_models() == ["mock/coder", "mock/fast", "mock/smart"]
    assert eng.list_models("mock") == eng.list_models() and eng.list_models("openai") == []
    assert [m.id for m in eng.find_models("tools")] == ["mock/coder", "mock/smart"]
    assert [m.id for m in eng.find_models("tools", max_input_price=2)] == ["mock/coder"]
    assert eng.cheapest_model().id == "mock/fast"  # type: ignore[union-attr]
    assert eng.cheapest_model("reasoning").id == "mock/smart"  # type: ignore[union-attr]
    assert eng.fastest_model("tools").id == "mock/coder"  # type: ignore[union-attr]
    assert eng.fastest_model("vision") is None
    with pytest.raises(EngineError, match="unknown model"):
        eng.model_config("mock/nope")


async def test_config_as_code_and_registering_providers_at_run_time() -> None:
    """Custom configuration: build from Python dicts; register a provider and model later."""
    eng = Engine.from_data(
        {
            "providers": {"mock": {"protocol": "mock"}},
            "models": {"mock/fast": {"context_window": 8000, "input_price": 0, "output_price": 0}},
        },
        {"default": {"strategy": "ordered", "candidates": ["mock/fast"]}},
        clock=FakeClock(),
    )
    eng.add_provider("backup", {"protocol": "mock", "local": True})
    eng.add_model("backup/echo", {"context_window": 8000, "input_price": 0, "output_price": 0})
    resp = await eng.arun(ask(model="backup/echo"))
    await eng.aclose()
    assert resp.provider == "backup" and "backup/echo" in eng.list_models("backup")


class ClockedMock:
    """The real mock adapter, but each model takes a set time on the engine's fake clock."""

    protocol = "mock"

    def __init__(self, clock: FakeClock, seconds: dict[str, float]) -> None:
        self.inner, self.clock, self.seconds = get_adapter("mock"), clock, seconds

    async def complete(self, request: Request, endpoint: Endpoint) -> ProviderResponse:
        self.clock.advance(self.seconds[endpoint.upstream_model])
        return await self.inner.complete(request, endpoint)

    def stream(self, request: Request, endpoint: Endpoint) -> AsyncIterator[Chunk]:
        return self.inner.stream(request, endpoint)

    async def warm(self, endpoint: Endpoint) -> None:
        await self.inner.warm(endpoint)

    async def aclose(self) -> None:
        return None


async def test_fastest_response_learns_from_measured_latency(tmp_path: Path) -> None:
    """Fastest response: routing moves off a model whose measured latency beats its prior."""
    clock = FakeClock()
    adapter = ClockedMock(clock, {"fast": 3.0, "smart": 0.9, "coder": 0.1})
    cfg = write_config(
        tmp_path / "cfg", MOCK_MODELS, {"default": "strategy: latency_optimized\nseed: 1\n"}
    )
    eng = Engine.from_config(cfg, clock=clock, adapters={"mock": adapter})
    chosen = [(await eng.arun(ask(f"q{i}"))).model for i in range(30)]
    fastest = eng.fastest_model()
    await eng.aclose()
    assert chosen[0] == "mock/fast"  # the registry prior (50 ms) before any measurement
    assert chosen[-5:] == ["mock/coder"] * 5
    assert fastest is not None and fastest.id == "mock/coder"


async def test_max_latency_filter(tmp_path: Path) -> None:
    """Latency cap: a policy's max_latency_ms keeps slow models out of the ranking."""
    cfg = write_config(
        tmp_path / "cfg",
        MOCK_MODELS,
        {"default": "strategy: quality_optimized\nfilters: {max_latency_ms: 500}\n"},
    )
    eng = Engine.from_config(cfg, clock=FakeClock())
    resp = await eng.arun(ask())
    await eng.aclose()
    assert resp.model == "mock/coder"


async def test_input_tokens_per_minute_limit(tmp_path: Path) -> None:
    """Token-accurate limiting: input tokens per minute stop a call that would exceed them."""
    clock = FakeClock()
    models = MOCK_MODELS.replace(
        "    local: true\n", "    local: true\n    limits: {input_tpm: 300}\n", 1
    )
    route = (
        "strategy: ordered\ncandidates: [mock/fast]\nrate_limit: {on_limited: skip}\n"
        "retries: {max_retries: 0}\n"
    )
    eng = Engine.from_config(
        write_config(tmp_path / "cfg", models, {"default": route}), clock=clock
    )
    long = "word " * 200  # roughly 200+ input tokens
    await eng.arun(ask(long))
    with pytest.raises(AllCandidatesFailedError) as info:
        await eng.arun(ask(long + "again"))
    status: dict[str, Any] = eng.rate_limit_status("mock")
    clock.advance(61)
    await eng.arun(ask(long + "next minute"))
    await eng.aclose()
    assert [a.outcome for a in info.value.attempts] == ["rate_limited"]
    (view,) = status["keys"].values()
    assert view["input_tokens"]["limit"] == 300 and view["input_tokens"]["remaining"] < 200

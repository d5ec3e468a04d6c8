"""Seed features: strategies, named fallback chains, primary/preferred providers, task-type
routing, capabilities, budget-constrained generation and the fallback chain a policy shows."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from engine import Engine, NoCandidateError
from engine.testing.clock import FakeClock
from engine.testing.fakes import FakeAnthropic, FakeOllama, FakeOpenAI, Fault
from tests.acceptance.conftest import MOCK_MODELS, ask, shipped_config, write_config

ALL_MOCKS = "candidates: [mock/fast, mock/smart, mock/coder]\n"


def mock_engine(tmp_path: Path, route: str, **kw: object) -> Engine:
    """An engine whose default policy is `route`, over the three mock models."""
    cfg = write_config(tmp_path / "cfg", MOCK_MODELS, {"default": route})
    return Engine.from_config(cfg, clock=FakeClock(), **kw)  # type: ignore[arg-type]


async def models_chosen(eng: Engine, n: int, **extra: object) -> list[str]:
    return [(await eng.arun(ask(f"q{i}", **extra))).model for i in range(n)]


async def test_round_robin_distributes_evenly(tmp_path: Path) -> None:
    """Round robin: each candidate in turn, evenly."""
    eng = mock_engine(tmp_path, "strategy: round_robin\n" + ALL_MOCKS)
    chosen = await models_chosen(eng, 6)
    await eng.aclose()
    assert chosen[:3] == ["mock/fast", "mock/smart", "mock/coder"]
    assert chosen[3:] == chosen[:3]


async def test_weighted_follows_the_weights_reproducibly(tmp_path: Path) -> None:
    """Weighted: picks in proportion to configured weights, the same sequence under a seed."""
    route = (
        "strategy: weighted\ncandidates: [mock/fast, mock/smart]\nseed: 3\n"
        "candidate_weights: {mock/fast: 4, mock/smart: 1}\n"
    )
    first = mock_engine(tmp_path, route)
    a = await models_chosen(first, 200)
    await first.aclose()
    second = mock_engine(tmp_path / "again", route)
    b = await models_chosen(second, 200)
    await second.aclose()
    counts = Counter(a)
    assert a == b
    assert counts["mock/fast"] > 2 * counts["mock/smart"] > 0


async def test_least_loaded_avoids_the_busy_candidate(tmp_path: Path) -> None:
    """Least loaded: a new request goes to the candidate with fewer requests in flight."""
    eng = mock_engine(tmp_path, "strategy: least_loaded\ncandidates: [mock/fast, mock/smart]\n")
    busy = eng.astream(ask("a long stream that stays open " * 4))
    first = await busy.__anext__()
    other = await eng.arun(ask("quick one"))
    await busy.aclose()
    after = await eng.arun(ask("and another"))
    await eng.aclose()
    assert first.model == "mock/fast"
    assert other.model == "mock/smart"
    assert after.model == "mock/fast"


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        ("strategy: cost_optimized\n", "mock/fast"),
        ("strategy: quality_optimized\n", "mock/smart"),
        ("strategy: latency_optimized\n", "mock/fast"),
        ("strategy: balanced\nweights: {cost: 0, quality: 1, latency: 0}\n", "mock/smart"),
        ("strategy: balanced\nweights: {cost: 1, quality: 0, latency: 0}\n", "mock/fast"),
        ("strategy: ordered\ncandidates: [mock/coder, mock/fast]\n", "mock/coder"),
    ],
)
async def test_static_strategies_pick_by_their_criterion(
    tmp_path: Path, route: str, expected: str
) -> None:
    """Cost, quality, fastest, balanced and priority ordering choose the expected model."""
    eng = mock_engine(tmp_path, route)
    chosen = (await eng.arun(ask())).model
    explained = eng.explain(ask())
    await eng.aclose()
    assert chosen == expected
    assert explained["ranked"][0]["model"] == expected


async def test_capability_match_routes_by_required_capability(tmp_path: Path) -> None:
    """Capability match: a request needing `code` or `reasoning` lands on a model that has it."""
    eng = mock_engine(tmp_path, "strategy: capability_match\n")
    code = await eng.arun(ask("write a function", capabilities=["code"]))
    reasoning = await eng.arun(ask("analyse this", capabilities=["reasoning"]))
    with pytest.raises(NoCandidateError, match="vision"):
        await eng.arun(ask("look at this", capabilities=["vision"]))
    await eng.aclose()
    assert code.model == "mock/coder" and reasoning.model == "mock/smart"


def remote_and_local(tmp_path: Path, oa_url: str, route: str) -> Path:
    models = MOCK_MODELS.replace(
        "models:\n",
        f"  openai:\n    protocol: openai\n    base_url: {oa_url}\n    api_key: sk-acc-0003\n"
        "models:\n  openai/gpt-4o-mini:\n    capabilities: [chat]\n    context_window: 128000\n"
        "    input_price: 0.01\n    output_price: 0.01\n    quality: 0.95\n    latency_ms: 10\n",
        1,
    )
    return write_config(tmp_path / "cfg", models, {"default": route})


async def test_local_first_prefers_local_then_falls_back_to_remote(tmp_path: Path) -> None:
    """Local first: a local model answers while it works; a remote one when it fails."""
    async with FakeOpenAI() as oa:
        route = (
            "strategy: local_first\ncandidates: [openai/gpt-4o-mini, mock/fast]\n"
            "retries: {max_retries: 0}\n"
        )
        eng = Engine.from_config(remote_and_local(tmp_path, oa.url, route), clock=FakeClock())
        local = await eng.arun(ask())
        eng.remove_model("mock/smart")  # run-time registry change, recompiled and swapped
        broken = remote_and_local(tmp_path, oa.url, route)
        (broken / "models.yaml").write_text(
            (broken / "models.yaml").read_text().replace("fail_rate: 0", "fail_rate: 1")
        )
        eng.reload()
        remote = await eng.arun(ask())
        await eng.aclose()
    assert local.model == "mock/fast" and len(oa.requests) == 1
    assert remote.model == "openai/gpt-4o-mini"
    assert [a.outcome for a in remote.attempts] == ["unavailable", "ok"]


def wire_up_shipped(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    oa: FakeOpenAI,
    an: FakeAnthropic,
    ol: FakeOllama,
) -> Path:
    """The shipped config with OpenAI, Anthropic and Ollama pointed at loopback fakes."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-acc-openai-0004")
    monkeypatch.setenv("OPENAI_BASE_URL", oa.url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-acc-0005")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", an.url)
    monkeypatch.setenv("OLLAMA_BASE_URL", ol.url)
    return shipped_config(tmp_path / "shipped")


@pytest.mark.parametrize(
    "policy", ["high_quality", "cost_optimized", "fast_latency", "local_only", "code_generation"]
)
async def test_named_chains_route_over_the_wire(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy: str
) -> None:
    """Named chains: each shipped chain answers through its first choice, honouring its filters."""
    async with FakeOpenAI() as oa, FakeAnthropic() as an, FakeOllama() as ol:
        eng = Engine.from_config(
            wire_up_shipped(tmp_path, monkeypatch, oa, an, ol), clock=FakeClock()
        )
        plan = eng.explain(ask("write code"), policy=policy)
        resp = await eng.arun(ask("write code"), policy=policy)
        await eng.aclose()
    first = (plan["ranked"] or plan["chain"])[0]["model"]
    assert resp.model == first and resp.policy == policy
    model = eng.model_config(resp.model)
    if policy == "high_quality":
        assert model.quality >= 0.9 and resp.provider in ("openai", "anthropic")
    if policy == "local_only":
        assert model.local
    if policy == "code_generation":
        assert "code" in model.capabilities
    if policy == "cost_optimized":
        assert plan["ranked"][0]["est_cost_usd"] == min(c["est_cost_usd"] for c in plan["ranked"])


async def test_named_chain_fails_over_along_its_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """high_quality: when the first choice's provider is down the next in the chain answers."""
    async with FakeOpenAI() as oa, FakeAnthropic() as an, FakeOllama() as ol:
        an.default_fault = Fault(status=503)
        eng = Engine.from_config(
            wire_up_shipped(tmp_path, monkeypatch, oa, an, ol), clock=FakeClock()
        )
        ranked = [c["model"] for c in eng.explain(ask(), policy="high_quality")["ranked"]]
        resp = await eng.arun(ask(), policy="high_quality")
        await eng.aclose()
    assert ranked[0].startswith("anthropic/")
    tried = [a.model for a in resp.attempts]
    # No retry of the first choice: its leg's tries are owed to the candidates still
    # waiting (the ranking and the quality_optimized fallback policy), one each.
    assert tried == [ranked[0], resp.model]
    assert resp.provider == "openai" and resp.model == ranked[1]
    assert [a.outcome for a in resp.attempts] == ["unavailable", "ok"]


async def test_code_generation_chain_applies_its_system_template(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Code generation chain: the policy's system prompt template reaches the upstream."""
    async with FakeOpenAI() as oa, FakeAnthropic() as an, FakeOllama() as ol:
        eng = Engine.from_config(
            wire_up_shipped(tmp_path, monkeypatch, oa, an, ol), clock=FakeClock()
        )
        resp = await eng.arun(
            ask("Write a REST API endpoint", variables={"language": "Go"}), policy="code_generation"
        )
        await eng.aclose()
        wire = [r.body for up in (oa, an, ol) for r in up.requests]
    assert resp.provider in ("openai", "anthropic")
    assert "careful Go programmer" in str(wire[-1])


async def test_primary_provider_then_ordered_fallbacks(tmp_path: Path) -> None:
    """Primary + fallbacks: the primary is tried first, then each fallback in order."""
    async with FakeOpenAI() as oa:
        oa.default_fault = Fault(status=500)
        route = (
            "strategy: ordered\ncandidates: [openai/gpt-4o-mini, mock/smart, mock/fast]\n"
            "retries: {max_retries: 1}\n"
        )
        eng = Engine.from_config(remote_and_local(tmp_path, oa.url, route), clock=FakeClock())
        resp = await eng.arun(ask())
        stats = eng.stats()
        await eng.aclose()
    assert [a.model for a in resp.attempts] == ["openai/gpt-4o-mini"] * 2 + ["mock/smart"]
    assert len(oa.requests) == 2
    assert stats["totals"]["fallbacks"] == 1


async def test_preferred_provider_with_fallback(tmp_path: Path) -> None:
    """Preferred provider: pin a model, fall back to a policy when it fails."""
    async with FakeOpenAI() as oa:
        eng = Engine.from_config(
            remote_and_local(tmp_path, oa.url, "strategy: ordered\ncandidates: [mock/fast]\n"),
            clock=FakeClock(),
        )
        preferred = await eng.arun(ask(model="openai/gpt-4o-mini", fallbacks=["default"]))
        oa.default_fault = Fault(status=401)
        fell_back = await eng.arun(ask(model="openai/gpt-4o-mini", fallbacks=["default"]))
        await eng.aclose()
    assert preferred.model == "openai/gpt-4o-mini"
    assert fell_back.model == "mock/fast"
    assert fell_back.attempts[0].outcome == "authentication"


ROUTER = """strategy: cost_optimized
rules:
  - name: code
    when: {feature: task_type, eq: code_generation}
    strategy: quality_optimized
    filters: {capabilities: [code]}
  - name: analysis
    when: {feature: task_type, eq: analysis}
    strategy: quality_optimized
    filters: {capabilities: [reasoning]}
"""


async def test_task_type_routing(tmp_path: Path) -> None:
    """Task-type routing: code generation and analysis go to the models built for them."""
    eng = mock_engine(tmp_path, ROUTER)
    code = await eng.arun(
        ask("Write a REST API endpoint", metadata={"task_type": "code_generation"})
    )
    analysis = await eng.arun(ask("Analyze this architecture", metadata={"task_type": "analysis"}))
    chat = await eng.arun(ask("hello"))
    await eng.aclose()
    assert (code.model, code.rule) == ("mock/coder", "code")
    assert (analysis.model, analysis.rule) == ("mock/smart", "analysis")
    assert chat.model == "mock/fast" and chat.rule is None


async def test_budget_remaining_limits_the_choice(tmp_path: Path) -> None:
    """Budget-constrained generation: a small budget_usd excludes models that could exceed it."""
    eng = mock_engine(tmp_path, "strategy: quality_optimized\n")
    rich = await eng.arun(ask())
    poor = await eng.arun(ask(budget_usd=0.0005))
    with pytest.raises(NoCandidateError, match=r"worst-case cost .* > budget"):
        await eng.arun(ask(budget_usd=0.0000001))
    await eng.aclose()
    assert rich.model == "mock/smart"
    assert poor.model != "mock/smart" and (poor.cost_usd or 0) <= 0.0005


async def test_fallback_chain_is_visible_before_calling(tmp_path: Path) -> None:
    """Get the fallback chain: explain lists the ranked candidates and the chain, no call made."""
    route = "strategy: cost_optimized\nfilters: {capabilities: [tools]}\nfallback: {chain: [mock/fast]}\n"
    eng = mock_engine(tmp_path, route)
    plan = eng.explain(ask())
    stats = eng.stats()
    await eng.aclose()
    assert [c["model"] for c in plan["ranked"]] == ["mock/coder", "mock/smart"]
    assert [c["model"] for c in plan["chain"]] == ["mock/fast"]
    assert stats["totals"]["requests"] == 0


async def test_fallback_chain_for_a_primary_model(tmp_path: Path) -> None:
    """Custom fallback chain: a primary model plus a cost-optimized fallback for `code`."""
    eng = mock_engine(tmp_path, "strategy: cost_optimized\n")
    request = ask(model="mock/smart", fallbacks=["default"], capabilities=["code"])
    plan = eng.explain(request)
    await eng.aclose()
    assert plan["pinned"] and [r["model"] for r in plan["ranked"]] == ["mock/smart"]
    (fallback,) = plan["fallbacks"]
    assert fallback["policy"] == "default"
    assert [r["model"] for r in fallback["ranked"]] == ["mock/coder"]

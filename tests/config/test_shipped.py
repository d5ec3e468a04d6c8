"""The shipped models.yaml, routes/ and schema/ files: they compile, route offline, stay fresh."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.cli import main
from engine.compile import build_plan, load_plan
from engine.config.schema import render
from engine.messages import parse_request
from engine.plan import features_of, select
from engine.plan.values import Features

ROOT = Path(__file__).resolve().parents[2]
STRATEGIES = {
    "cost_optimized", "latency_optimized", "quality_optimized", "balanced", "round_robin",
    "weighted", "least_loaded", "local_first", "capability_match", "ordered",
}  # fmt: skip
NAMED = {
    "default",
    "high_quality",
    "cost_optimized",
    "fast_latency",
    "local_only",
    "code_generation",
}


@pytest.fixture(scope="module")
def plan_no_keys():
    """The shipped config compiled with an empty environment (no API keys at all)."""
    return load_plan(ROOT, env={})


def test_compiles_without_any_key(plan_no_keys):
    """With no keys set the config compiles; missing keys are warnings, never errors."""
    plan, warnings = plan_no_keys
    assert plan.default_policy == "default"
    assert warnings and all(d.severity == "warning" for d in warnings)
    assert any("OPENAI_API_KEY is not set" in d.message for d in warnings)


def test_providers_without_keys_are_disabled_with_reason(plan_no_keys):
    """A provider whose key variable is unset is disabled and says which variable is missing."""
    plan, _ = plan_no_keys
    assert plan.providers["anthropic"].enabled is False
    assert plan.providers["anthropic"].disabled_reason == "ANTHROPIC_API_KEY is not set"
    assert plan.providers["mock"].enabled and plan.providers["mock"].local


def test_default_policy_routes_to_mock_offline(plan_no_keys):
    """The default policy picks a mock model when no key is configured."""
    plan, _ = plan_no_keys
    req = parse_request({"messages": [{"role": "user", "content": "hello"}]})
    sel = select(plan, "default", features_of(req))
    assert sel.ranked[0].model.id.startswith("mock/")


def test_disabled_provider_eliminated_at_selection(plan_no_keys):
    """Models of a disabled provider appear among the eliminated with 'provider disabled: ...'."""
    plan, _ = plan_no_keys
    sel = select(plan, "ordered", Features(input_tokens=10))
    reasons = dict(sel.eliminated)
    assert (
        reasons["anthropic/claude-sonnet-4-5"] == "provider disabled: ANTHROPIC_API_KEY is not set"
    )
    assert [s.model.id for s in sel.ranked] == ["mock/smart"]


def test_keys_enable_providers_and_never_leak():
    """Setting a key enables the provider; the key is wrapped in a Secret that prints ***."""
    plan = build_plan(ROOT, env={"OPENAI_API_KEY": "sk-test-1234567890abcdef"})
    provider = plan.providers["openai"]
    assert provider.enabled and provider.keys[0].secret is not None
    assert provider.keys[0].secret.reveal() == "sk-test-1234567890abcdef"
    assert "sk-test" not in repr(provider)


def test_base_url_override_from_environment():
    """<ID>_BASE_URL overrides any provider's base URL (proxies, self-hosted gateways)."""
    plan = build_plan(ROOT, env={"GROQ_BASE_URL": "http://127.0.0.1:9999/v1/", "GROQ_API_KEY": "k"})
    assert plan.providers["groq"].base_url == "http://127.0.0.1:9999/v1"


def test_every_strategy_and_named_policy_is_shipped(plan_no_keys):
    """routes/ covers every strategy and the named chains people ask for."""
    plan, _ = plan_no_keys
    strategies = {tree.default.route.strategy.name for tree in plan.policies.values()}
    assert strategies >= STRATEGIES
    assert set(plan.policies) >= NAMED


def test_registry_prices_every_non_local_model(plan_no_keys):
    """Every remote model in the shipped registry resolves an input and output price."""
    plan, _ = plan_no_keys
    remote = [m for m in plan.models.values() if not m.local]
    assert len(remote) >= 30
    unpriced = [m.id for m in remote if m.input_price is None or m.output_price is None]
    assert unpriced == []


def test_committed_schemas_are_fresh():
    """schema/*.json equal what `python -m engine schema --write` would generate."""
    assert (ROOT / "schema/models.schema.json").read_text() == render("models")
    assert (ROOT / "schema/route.schema.json").read_text() == render("route")


def test_config_files_point_editors_at_the_schema():
    """models.yaml and every route file start with the yaml-language-server $schema comment."""
    files = [ROOT / "models.yaml", *sorted((ROOT / "routes").glob("*.yaml"))]
    for path in files:
        first = path.read_text().splitlines()[0]
        assert first.startswith("# yaml-language-server: $schema="), path


def test_validate_shipped_config_exits_zero(capsys):
    """`python -m engine validate .` on the shipped config reports no errors (exit 0)."""
    assert main(["validate", str(ROOT)]) == 0
    assert "error" not in capsys.readouterr().out.replace("[warning]", "")


def test_with_keys_real_models_rank_before_mock():
    """With keys set, cost_optimized ranks real models; mock only appears in the fallback chain."""
    plan = build_plan(ROOT, env={"OPENAI_API_KEY": "k", "GROQ_API_KEY": "k"})
    sel = select(plan, "cost_optimized", Features(input_tokens=100))
    assert sel.ranked and not any(s.model.id.startswith("mock/") for s in sel.ranked)
    assert [s.model.id for s in sel.chain] == ["mock/smart"]


def test_shipped_registry_declares_no_guessed_rate_limits() -> None:
    """No provider in the shipped models.yaml carries a guessed tier's limits (they acted
    as hard ceilings below what the provider's own headers announced); every key starts
    unlimited and learns its limits from the headers."""
    names = ("OPENAI", "ANTHROPIC", "GEMINI", "GROQ", "DEEPSEEK", "MISTRAL", "TOGETHER")
    env = {f"{n}_API_KEY": f"sk-shipped-{n.lower()}-000001" for n in names}
    env |= {"AZURE_OPENAI_API_KEY": "az-shipped-000001", "HF_TOKEN": "hf_shipped000001"}
    env |= {"AZURE_OPENAI_ENDPOINT": "https://example.invalid"}
    plan, _ = load_plan(ROOT, env=env)
    assert sum(len(p.keys) for p in plan.providers.values()) >= 8
    declared = {
        key.id: (key.rpm, key.input_tpm, key.output_tpm)
        for provider in plan.providers.values()
        for key in provider.keys
        if (key.rpm, key.input_tpm, key.output_tpm) != (None, None, None)
    }
    assert declared == {}

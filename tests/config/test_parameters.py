"""Model parameter rules: compiled into the model's endpoint options, and validate warns
about rules that would silently drop what a caller sends."""

from pathlib import Path

from engine.compile.compiler import load_plan

MODELS = """\
providers:
  mock: {protocol: mock, options: {latency_ms: 0}}
models:
  mock/thinker:
    capabilities: [chat, reasoning]
    context_window: 1000
    parameters: {token_limit: max_completion_tokens, temperature: false, reasoning: true, reasoning_efforts: [low, high]}
  mock/unsure: {capabilities: [chat, reasoning], context_window: 1000}
  mock/odd: {context_window: 1000, parameters: {reasoning_efforts: [low]}}
  mock/plain: {context_window: 1000}
"""


def _load(tmp_path: Path) -> tuple[object, list[str]]:
    (tmp_path / "routes").mkdir()
    (tmp_path / "models.yaml").write_text(MODELS)
    (tmp_path / "routes" / "p.yaml").write_text("candidates: [mock/plain]\n")
    plan, warnings = load_plan(tmp_path, env={})
    return plan, [w.format() for w in warnings]


def test_rules_become_endpoint_options_beside_the_providers(tmp_path: Path) -> None:
    """A model's rules are merged over its provider's options; no rules: the provider's."""
    plan, _ = _load(tmp_path)
    thinker = plan.models["mock/thinker"]  # type: ignore[attr-defined]
    assert dict(thinker.options) == {
        "latency_ms": "0",
        "temperature": "false",
        "reasoning": "true",
        "max_tokens_field": "max_completion_tokens",
        "reasoning_efforts": "low,high",
    }
    assert plan.models["mock/plain"].options is None  # type: ignore[attr-defined]


def test_rules_that_would_drop_silently_are_warned_about(tmp_path: Path) -> None:
    """A reasoning model without reasoning rules, efforts without reasoning: warnings."""
    _, warnings = _load(tmp_path)
    assert any("mock/unsure" in w and "reasoning: true" in w for w in warnings)
    assert any("mock/odd" in w and "not declared reasoning" in w for w in warnings)
    assert not any("mock/thinker" in w for w in warnings)

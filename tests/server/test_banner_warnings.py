"""`serve` prints each unset-variable warning once: the banner covers disabled providers."""

from pathlib import Path

import pytest

from engine.commands.serve import _beyond_banner
from engine.compile import load_plan

MODELS = """
providers:
  openai: {protocol: openai, base_url: "https://api.openai.com/v1", api_key: "${NOPE_OPENAI_KEY}"}
  mock: {protocol: mock, options: {seed: "${NOPE_SEED}"}}
models:
  openai/gpt-4o-mini: {}
  mock/fast: {context_window: 8000}
"""
ROUTE = "strategy: ordered\ncandidates: [mock/fast]\n"


def test_disabled_providers_warnings_are_left_to_the_banner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disabled provider's unset key is not repeated; an enabled provider's unset value is."""
    monkeypatch.delenv("NOPE_OPENAI_KEY", raising=False)
    monkeypatch.delenv("NOPE_SEED", raising=False)
    (tmp_path / "models.yaml").write_text(MODELS)
    (tmp_path / "routes").mkdir()
    (tmp_path / "routes" / "main.yaml").write_text(ROUTE)
    plan, warnings = load_plan(tmp_path)
    assert not plan.providers["openai"].enabled
    assert any(d.path.startswith("providers.openai") for d in warnings)
    shown = _beyond_banner(warnings, plan)
    assert not any(d.path.startswith("providers.openai") for d in shown)
    assert plan.providers["mock"].enabled
    assert [d.path for d in shown] == ["providers.mock.options.seed"]

"""`validate` catches configs that would fail or mislead on every call: a template that can
never render, and a weight for a model that is not a candidate (issue 14)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from engine.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "models.yaml", tmp_path / "models.yaml")
    (tmp_path / "routes").mkdir()
    (tmp_path / "routes" / "default.yaml").write_text(
        "strategy: ordered\ncandidates: [mock/smart]\n"
    )
    return tmp_path


def _validate(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["validate", str(config)])
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("'{{ input | shout }}'", "No filter named 'shout'"),
        ("'{{ input is loud }}'", "No test named 'loud'"),
        ("'{% include \"header.txt\" %}{{ input }}'", "no loader"),
        ("'{{ (tone | int) / 0 }}'", "ZeroDivisionError"),
    ],
)
def test_a_template_that_fails_every_call_is_an_error(
    config: Path, capsys: pytest.CaptureFixture[str], template: str, expected: str
) -> None:
    """Compiled and rendered once with its defaults: the failure is an error at file:line."""
    (config / "routes" / "t.yaml").write_text(
        "strategy: ordered\ncandidates: [mock/smart]\n"
        f"template:\n  user: {template}\n  variables: [tone]\n  defaults: {{tone: '3'}}\n"
    )
    code, out = _validate(config, capsys)
    assert code == 1
    assert "t.yaml:4:" in out and "template fails on every call" in out and expected in out


def test_a_template_needing_caller_variables_is_still_valid(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A declared variable without a default is the caller's to pass: not an error."""
    (config / "routes" / "t.yaml").write_text(
        "strategy: ordered\ncandidates: [mock/smart]\n"
        "template:\n  system: 'Answer in {{ lang | upper }}, {{ n + 1 }} points.'\n"
        "  variables: [lang, n]\n"
    )
    code, out = _validate(config, capsys)
    assert code == 0, out


def test_a_weight_for_a_non_candidate_is_an_error(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`candidate_weights` naming a known model outside `candidates`: error at its line."""
    (config / "routes" / "w.yaml").write_text(
        "strategy: weighted\ncandidates: [mock/smart]\n"
        "candidate_weights:\n  mock/smart: 3\n  mock/fast: 1\n"
    )
    code, out = _validate(config, capsys)
    assert code == 1
    assert 'w.yaml:5:3: candidate_weights["mock/fast"]: `mock/fast` is not a candidate' in out

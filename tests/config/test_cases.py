"""Data-driven config cases: every file under cases/valid compiles cleanly, and every case
under cases/invalid produces the diagnostics its `# expect: LINE: text` comments state."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from engine.compile.compiler import check_config
from engine.config.project import find_models_file, load_paths, route_files
from engine.errors import Diagnostic

CASES = Path(__file__).parent / "cases"
SHARED_MODELS = CASES / "models.yaml"
EXPECT = re.compile(r"^#\s*expect:\s*(\d+):\s*(.+?)\s*$")


def _cases(kind: str) -> list[Path]:
    return sorted((CASES / kind).iterdir())


def _check(case: Path) -> tuple[list[Path], list[Diagnostic]]:
    if case.is_dir():
        models = find_models_file(case) or SHARED_MODELS
        routes = route_files(case) if models != case / "models.yaml" else []
        routes = [r for r in routes if r.name != "models.yaml"]
        files = [models, *routes] if models.parent == case else routes
    else:
        models, routes, files = SHARED_MODELS, [case], [case]
    cs = load_paths(models, routes, env={"CASE_BUDGET": "0.5"})
    _, found = check_config(cs, {})
    return files, found


def _expectations(files: list[Path]) -> list[tuple[str, int, str]]:
    out = []
    for path in files:
        for line in path.read_bytes().decode("utf-8", "replace").splitlines():
            m = EXPECT.match(line)
            if m:
                out.append((str(path), int(m.group(1)), m.group(2)))
    return out


@pytest.mark.parametrize("case", _cases("valid"), ids=lambda p: p.name)
def test_valid_case_has_no_errors(case):
    """A valid case compiles without a single error diagnostic."""
    _, found = _check(case)
    errors = [d.format() for d in found if d.severity == "error"]
    assert errors == []


@pytest.mark.parametrize("case", _cases("invalid"), ids=lambda p: p.name)
def test_invalid_case_reports_expected_diagnostics(case):
    """Each `# expect: LINE: text` is matched by an error on that line of that file."""
    files, found = _check(case)
    expected = _expectations(files)
    assert expected, f"{case} states no expectation"
    errors = [d for d in found if d.severity == "error"]
    for file, line, text in expected:
        hits = [d for d in errors if d.file == file and d.line == line and text in d.format()]
        shown = "\n".join(d.format() for d in errors)
        assert hits, f"expected {file}:{line}: {text!r}; got:\n{shown}"

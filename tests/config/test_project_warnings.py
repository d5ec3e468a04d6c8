"""A config directory without policies, or with a directory posing as a route file, is warned about."""

from pathlib import Path

from engine.config.project import load_dir

MODELS = "providers:\n  mock: {protocol: mock}\nmodels:\n  mock/fast: {}\n"


def _warnings(root: Path) -> list[str]:
    return [d.format() for d in load_dir(root, env={}).diagnostics if d.severity == "warning"]


def test_no_route_files_is_a_warning(tmp_path: Path) -> None:
    """A models.yaml with no routes/ at all warns that no policy exists."""
    (tmp_path / "models.yaml").write_text(MODELS)
    assert any("no policies" in w for w in _warnings(tmp_path))


def test_directory_named_like_a_route_file_is_reported(tmp_path: Path) -> None:
    """routes/odd.yaml that is a directory is named in a warning, not silently skipped."""
    (tmp_path / "models.yaml").write_text(MODELS)
    (tmp_path / "routes" / "odd.yaml").mkdir(parents=True)
    found = _warnings(tmp_path)
    assert any("odd.yaml" in w and "not a file" in w for w in found)
    assert any("no policies" in w for w in found)

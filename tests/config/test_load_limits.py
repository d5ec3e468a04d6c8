"""The bounded YAML loader: alias bombs, recursive aliases, deep nesting and huge files are
located diagnostics, loaded in bounded memory, never a traceback (issue 14)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from engine.cli import main
from engine.config import load
from engine.config.load import MAX_NODES, load_file, load_text

ROOT = Path(__file__).resolve().parents[2]


def alias_bomb(levels: int, width: int) -> str:
    """`width`**(levels+1) strings from a file of a few hundred bytes."""
    lines = ["a0: &a0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_stops_at_the_node_limit_with_a_located_error():
    """A bomb expanding to 12**5 (248,832) values stops at MAX_NODES with file:line."""
    doc = load_text(alias_bomb(4, 12), "bomb.yaml")
    (diag,) = doc.diagnostics
    assert doc.data is None
    assert f"more than {MAX_NODES} values" in diag.message
    assert diag.file == "bomb.yaml" and diag.line is not None


def test_a_recursive_alias_is_an_error_not_a_recursion_error():
    """`&x [1, *x]` contains itself: a diagnostic at the anchor, not a RecursionError."""
    (diag,) = load_text("ok: 1\nx: &x [1, *x]\n", "r.yaml").diagnostics
    assert "recursive alias" in diag.message
    assert (diag.file, diag.line) == ("r.yaml", 2)


def test_a_mapping_merging_itself_is_an_error():
    """`&a {b: 1, <<: *a}` merges itself: a diagnostic, not endless recursion."""
    (diag,) = load_text("a: &a {b: 1, <<: *a}\n", "m.yaml").diagnostics
    assert "recursive alias" in diag.message and diag.line == 1


def test_deep_nesting_is_a_located_error():
    """5,000 nested lists (PyYAML's composer recursed once per level) is a diagnostic."""
    text = "strategy: ordered\nx: " + "[" * 5000 + "]" * 5000 + "\n"
    (diag,) = load_text(text, "deep.yaml").diagnostics
    assert "nesting deeper than 64 levels" in diag.message
    assert diag.line == 2


def test_merge_keys_from_a_list_first_source_wins():
    """`<<: [*a, *b]` merges both, the first source winning, explicit keys over both."""
    text = "a: &a {x: 1, y: 1}\nb: &b {y: 2, z: 2}\nc:\n  <<: [*a, *b]\n  z: 3\n"
    doc = load_text(text)
    assert doc.ok
    assert doc.data["c"] == {"x": 1, "y": 1, "z": 3}
    assert doc.locate("c.z") == (5, 3)


def test_a_file_over_the_size_limit_is_not_read(tmp_path, monkeypatch):
    """A file larger than MAX_FILE_BYTES is one diagnostic; it is not parsed."""
    monkeypatch.setattr(load, "MAX_FILE_BYTES", 1000)
    path = tmp_path / "big.yaml"
    path.write_text("strategy: ordered\n" + "# padding\n" * 200)
    (diag,) = load_file(path).diagnostics
    assert "larger than 1000 bytes" in diag.message and diag.file == str(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("x: &x [1, *x]\n", ":1:4: recursive alias"),
        ("x: " + "[" * 3000 + "]" * 3000 + "\n", ":1:"),
        (alias_bomb(4, 12), ":1:50: more than"),
    ],
)
def test_validate_reports_file_and_line_and_exits_1(tmp_path, capsys, text, expected):
    """`python -m engine validate` names file:line for each unbounded shape and exits 1."""
    shutil.copy(ROOT / "models.yaml", tmp_path / "models.yaml")
    shutil.copytree(ROOT / "routes", tmp_path / "routes")
    (tmp_path / "routes" / "evil.yaml").write_text(text)
    assert main(["validate", str(tmp_path)]) == 1
    out = capsys.readouterr()
    assert "evil.yaml" + expected in out.out + out.err
    assert "Traceback" not in out.out + out.err

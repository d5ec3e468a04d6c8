"""The YAML loader: positions for every node, and diagnostics instead of tracebacks."""

from __future__ import annotations

from engine.config.load import load_file, load_text


def test_every_node_has_a_position():
    """Keys, list items and nested values are located at 1-based line and column."""
    doc = load_text("a: 1\nrules:\n  - when: {feature: x}\n    name: r\n", "f.yaml")
    assert doc.ok
    assert doc.marks["a"] == (1, 1)
    assert doc.marks["rules[0]"] == (3, 5)
    assert doc.marks["rules[0].name"] == (4, 5)
    assert doc.marks["rules[0].when.feature"] == (3, 12)


def test_keys_with_dots_and_slashes_are_quoted_in_paths():
    """Model ids like `openai/gpt-4.1` become `models["openai/gpt-4.1"]`, not nested keys."""
    doc = load_text("models:\n  openai/gpt-4.1: {quality: 1}\n")
    assert doc.locate('models["openai/gpt-4.1"].quality') == (2, 20)
    assert doc.locate('models["openai/gpt-4.1"].missing') == (2, 3)


def test_duplicate_keys_are_reported_where_repeated():
    """A key given twice is an error at the second occurrence, the first value is kept."""
    doc = load_text("x: 1\ny: 2\nx: 3\n", "d.yaml")
    assert doc.data == {"x": 1, "y": 2}
    (diag,) = doc.diagnostics
    assert (diag.line, diag.column, diag.path) == (3, 1, "x")
    assert "duplicate key `x`" in diag.message


def test_empty_and_comment_only_files_are_reported():
    """An empty or comment-only file is a diagnostic 'file is empty'."""
    for text in ("", "   \n", "# only a comment\n---\n"):
        (diag,) = load_text(text, "e.yaml").diagnostics
        assert diag.message == "file is empty"


def test_malformed_yaml_gives_a_located_diagnostic():
    """A YAML syntax error becomes one diagnostic with the parser's line and column."""
    (diag,) = load_text("a: [1, 2\nb: 3\n", "m.yaml").diagnostics
    assert diag.message.startswith("invalid YAML")
    assert diag.line is not None and diag.line >= 2


def test_binary_and_non_utf8_files_are_reported(tmp_path):
    """Binary content and undecodable bytes are diagnostics, not exceptions."""
    binary = tmp_path / "b.yaml"
    binary.write_bytes(b"\x89PNG\x00\x00\x01")
    latin = tmp_path / "l.yaml"
    latin.write_bytes(b"name: caf\xe9\n")
    assert "binary file" in load_file(binary).diagnostics[0].message
    assert "not UTF-8" in load_file(latin).diagnostics[0].message


def test_missing_file_is_reported(tmp_path):
    """A path that cannot be read is a diagnostic naming the problem."""
    (diag,) = load_file(tmp_path / "nope.yaml").diagnostics
    assert "cannot read file" in diag.message


def test_huge_and_infinite_numbers_are_rejected():
    """Integers past 10**15 and .inf/.nan are diagnostics with their location."""
    doc = load_text("a: 123456789012345678901234567890\nb: .inf\nc: 42\n", "n.yaml")
    messages = sorted((d.line, d.message) for d in doc.diagnostics)
    assert messages[0][0] == 1 and "too large" in messages[0][1]
    assert messages[1][0] == 2 and "not finite" in messages[1][1]
    assert doc.data["c"] == 42


def test_merge_keys_and_anchors_are_supported():
    """YAML anchors and `<<` merge keys work as in any YAML tool."""
    doc = load_text("base: &b {x: 1, y: 2}\nchild:\n  <<: *b\n  y: 3\n")
    assert doc.ok
    assert doc.data["child"] == {"x": 1, "y": 3}


def test_non_string_keys_are_kept_as_text():
    """Numeric keys are turned into strings so paths stay well defined."""
    doc = load_text("1: a\ntrue: b\n")
    assert doc.data == {"1": "a", "True": "b"}

"""Read YAML text into plain data plus the line/column of every node, as diagnostics need.

Why not `yaml.safe_load`: it forgets where things were, so schema errors could only say
"somewhere in routes/x.yaml". We compose the node graph with PyYAML's SafeLoader and build
the Python values ourselves, recording a 1-based (line, column) for each JSON path
(`rules[0].when`). Duplicate keys, empty files, binary files, malformed YAML and numbers too
large to mean anything become `Diagnostic`s; nothing here raises on bad input.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from engine.config.sensitive import is_secret_path
from engine.errors import Diagnostic

#: Integers beyond this are certainly a typo (a budget of 10**18 dollars, a window of 2**64).
MAX_INT = 10**15

Marks = dict[str, tuple[int, int]]


@dataclass(frozen=True, slots=True)
class Document:
    """One loaded YAML file: its data, where each JSON path sits, and what went wrong."""

    source: str
    data: Any
    marks: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    diagnostics: tuple[Diagnostic, ...] = ()

    @property
    def ok(self) -> bool:
        return not any(d.severity == "error" for d in self.diagnostics)

    def locate(self, path: str) -> tuple[int | None, int | None]:
        """The position of `path`, or of its nearest located ancestor."""
        while True:
            if path in self.marks:
                return self.marks[path]
            if not path:
                return (None, None)
            path = parent_path(path)

    def diagnostic(self, path: str, message: str, **kw: Any) -> Diagnostic:
        """A Diagnostic located at `path` in this document."""
        line, col = self.locate(path)
        return Diagnostic(message, file=self.source, line=line, column=col, path=path, **kw)


_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")

#: What constructing a tagged scalar can raise (`!!int abc` is a ValueError, not a YAMLError).
_BAD_SCALAR = (yaml.YAMLError, ValueError, TypeError, OverflowError)


def join_path(base: str, key: str | int) -> str:
    """`rules` + 0 -> `rules[0]`; + `when` -> `rules[0].when`; odd keys -> `models["a/b.c"]`."""
    if isinstance(key, int):
        return f"{base}[{key}]"
    if not _PLAIN_KEY.match(key):
        return f"{base}[{json.dumps(key)}]"
    return f"{base}.{key}" if base else key


def parent_path(path: str) -> str:
    """The JSON path one level up (`a.b[2]` -> `a.b`, `a["x.y"]` -> `a`, `a` -> ``)."""
    cut = path.rfind('["') if path.endswith('"]') else max(path.rfind("."), path.rfind("["))
    return path[:cut] if cut > 0 else ""


def load_file(path: Path | str) -> Document:
    """Read and parse one YAML file; unreadable, binary or empty files give a diagnostic."""
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        return _failed(source, f"cannot read file: {exc.strerror or exc}")
    if b"\x00" in raw:
        return _failed(source, "binary file: expected YAML text")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return _failed(source, f"not UTF-8 text (byte {exc.start})")
    return load_text(text, source)


def load_text(text: str, source: str = "<memory>") -> Document:
    """Parse YAML text; the result always exists, with diagnostics when it is unusable."""
    if not text.strip() or all(_is_comment(line) for line in text.splitlines()):
        return _failed(source, "file is empty", line=1, column=1)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        return _yaml_error(source, exc)
    except yaml.YAMLError as exc:
        return _failed(source, f"invalid YAML: {exc}")
    builder = _Builder(source)
    data = builder.build(node, "") if node is not None else None
    return Document(source, data, builder.marks, tuple(builder.diagnostics))


def _is_comment(line: str) -> bool:
    stripped = line.strip()
    return not stripped or stripped.startswith("#") or stripped in ("---", "...")


def _failed(
    source: str, message: str, line: int | None = None, column: int | None = None
) -> Document:
    return Document(source, None, {}, (Diagnostic(message, file=source, line=line, column=column),))


def _yaml_error(source: str, exc: yaml.MarkedYAMLError) -> Document:
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or "invalid YAML"
    if exc.context and exc.context not in problem:
        problem = f"{exc.context}, {problem}"
    line = mark.line + 1 if mark else None
    column = mark.column + 1 if mark else None
    return _failed(source, f"invalid YAML: {problem}", line, column)


class _Builder:
    """Turns a composed node graph into Python values, recording marks and problems."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.marks: Marks = {}
        self.diagnostics: list[Diagnostic] = []
        self._constructor = yaml.SafeLoader("")

    def build(self, node: yaml.Node, path: str) -> Any:
        self.marks.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(child, join_path(path, i)) for i, child in enumerate(node.value)]
        return self._scalar(node, path)

    def _mapping(self, node: yaml.MappingNode, path: str) -> dict[Any, Any]:
        own = [pair for pair in node.value if pair[0].tag != "tag:yaml.org,2002:merge"]
        self._constructor.flatten_mapping(node)  # YAML merge keys (`<<: *base`) go first
        merged = node.value[: len(node.value) - len(own)]
        out: dict[Any, Any] = {}
        for key_node, value_node in own:
            key = self._key(key_node, path)
            if key is None:
                continue
            child = join_path(path, key)
            if key in out:
                self._error(key_node, child, f"duplicate key `{key}`", "each key may appear once")
                continue
            self.marks[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            out[key] = self.build(value_node, child)
        for key_node, value_node in merged:  # merged keys never override explicit ones
            key = self._key(key_node, path)
            if key is not None and key not in out:
                out[key] = self.build(value_node, join_path(path, key))
        return out

    def _key(self, node: yaml.Node, path: str) -> str | None:
        if not isinstance(node, yaml.ScalarNode):
            self._error(node, path, "mapping keys must be plain strings", None)
            return None
        try:
            value = self._constructor.construct_object(node)
        except _BAD_SCALAR:
            self._error(node, path, "mapping key is not a valid value for its tag", None)
            return None
        return value if isinstance(value, str) else str(value)

    def _scalar(self, node: yaml.Node, path: str) -> Any:
        try:
            value = self._constructor.construct_object(node)
        except _BAD_SCALAR as exc:  # `!!int abc`: ValueError from the constructor, not YAMLError
            why = "" if is_secret_path(path) else f": {exc}"
            self._error(node, path, f"invalid value{why}", None)
            return None
        if isinstance(value, bool) or value is None:
            return value
        shown = "" if is_secret_path(path) else f" {node.value}"  # a key is never quoted
        if isinstance(value, int) and abs(value) > MAX_INT:
            self._error(node, path, f"number{shown} is too large", f"at most {MAX_INT}")
            return None
        if isinstance(value, float) and not math.isfinite(value):
            self._error(node, path, f"number{shown} is not finite", "use a finite number")
            return None
        if isinstance(value, int | float | str):
            return value
        return str(node.value)  # timestamps, binary: keep the text, the schema will judge it

    def _error(self, node: yaml.Node, path: str, message: str, hint: str | None) -> None:
        mark = node.start_mark
        self.diagnostics.append(
            Diagnostic(message, self.source, mark.line + 1, mark.column + 1, path, hint)
        )

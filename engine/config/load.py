"""Read YAML text into plain data plus the line/column of every node, as diagnostics need.

Why not `yaml.safe_load`: it forgets where things were, so schema errors could only say
"somewhere in routes/x.yaml". We compose the node graph with PyYAML's SafeLoader and build
the Python values ourselves, recording a 1-based (line, column) for each JSON path
(`rules[0].when`). Duplicate keys, empty files, binary files, malformed YAML and numbers too
large to mean anything become `Diagnostic`s; nothing here raises on bad input.

The loader is bounded, because a config file is input too and a hot reload reads it inside
the server: a file larger than `MAX_FILE_BYTES`, nesting deeper than `MAX_DEPTH` (PyYAML's
composer recurses once per level, so a deep file ended in a RecursionError), more than
`MAX_NODES` values once aliases are expanded (an "alias bomb" of nine nested `[*a, *a, ...]`
levels is a 1 KB file that expands to 10**8 values: `validate` grew to 6.8 GB on one) and
an alias that contains itself each become one located diagnostic, and loading stops there.
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
#: A config file larger than this is not a hand-written config (2,000 rules are ~300 KB).
MAX_FILE_BYTES = 8 * 1024 * 1024
#: Nesting deeper than this is not a config either (predicates nest a few levels).
MAX_DEPTH = 64
#: Values built from one file, counting a value again each time an alias repeats it.
MAX_NODES = 100_000

Marks = dict[str, tuple[int, int]]

#: The diagnostic of a file with nothing but blanks and comments (some files may be empty).
EMPTY_FILE = "file is empty"


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
        with Path(path).open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)  # never more than the limit into memory
    except OSError as exc:
        return _failed(source, f"cannot read file: {exc.strerror or exc}")
    if len(raw) > MAX_FILE_BYTES:
        return _failed(source, f"file is larger than {MAX_FILE_BYTES} bytes", line=1, column=1)
    if b"\x00" in raw:
        return _failed(source, "binary file: expected YAML text")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return _failed(source, f"not UTF-8 text (byte {exc.start})")
    return load_text(text, source)


def load_text(text: str, source: str = "<memory>") -> Document:
    """Parse YAML text; the result always exists, with diagnostics when it is unusable."""
    if len(text) > MAX_FILE_BYTES:
        return _failed(source, f"file is larger than {MAX_FILE_BYTES} bytes", line=1, column=1)
    if not text.strip() or all(_is_comment(line) for line in text.splitlines()):
        return _failed(source, EMPTY_FILE, line=1, column=1)
    try:
        node = yaml.compose(text, Loader=_BoundedLoader)
    except yaml.MarkedYAMLError as exc:
        return _yaml_error(source, exc)
    except yaml.YAMLError as exc:
        return _failed(source, f"invalid YAML: {exc}")
    builder = _Builder(source)
    try:
        data = builder.build(node, "") if node is not None else None
    except _Unbounded as exc:
        mark = exc.node.start_mark
        return _failed(source, exc.message, mark.line + 1, mark.column + 1)
    return Document(source, data, builder.marks, tuple(builder.diagnostics))


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader whose composer stops at `MAX_DEPTH` levels of nesting.

    The composer calls `compose_node` once per level, recursively; counting there turns a
    RecursionError (a traceback) into a located `ComposerError` like any syntax error."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise yaml.composer.ComposerError(
                    None, None, f"nesting deeper than {MAX_DEPTH} levels", mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _Unbounded(Exception):
    """Building would not end, or not in reasonable memory: where, and why."""

    def __init__(self, node: yaml.Node, message: str) -> None:
        super().__init__(message)
        self.node = node
        self.message = message


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
        self._built = 0  # values built so far, aliases counted each time they repeat
        self._open: set[int] = set()  # the collections being built (to catch `&a [*a]`)

    def build(self, node: yaml.Node, path: str) -> Any:
        self._built += 1
        if self._built > MAX_NODES:
            raise _Unbounded(
                node, f"more than {MAX_NODES} values once aliases are expanded (an alias bomb?)"
            )
        self.marks.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
        if not isinstance(node, yaml.MappingNode | yaml.SequenceNode):
            return self._scalar(node, path)
        if id(node) in self._open:
            raise _Unbounded(node, "recursive alias: this value contains itself")
        self._open.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
            return [self.build(child, join_path(path, i)) for i, child in enumerate(node.value)]
        finally:
            self._open.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, path: str) -> dict[Any, Any]:
        own = [pair for pair in node.value if pair[0].tag != "tag:yaml.org,2002:merge"]
        merges = [value for key, value in node.value if key.tag == "tag:yaml.org,2002:merge"]
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
        for merged in merges:
            self._merge(out, merged, path)
        return out

    def _merge(self, out: dict[Any, Any], merged: yaml.Node, path: str) -> None:
        """YAML merge keys (`<<: *base` or `<<: [*a, *b]`): keys not given explicitly, the
        first source winning. Each source is built like any value (so it is counted and a
        source that contains the mapping itself is caught), with its positions kept only
        where the mapping has none of its own."""
        sources = merged.value if isinstance(merged, yaml.SequenceNode) else [merged]
        for source in sources:
            if not isinstance(source, yaml.MappingNode):
                self._error(
                    source, path, "a merge key (`<<`) needs a mapping or a list of them", None
                )
                continue
            own_marks, self.marks = self.marks, {}
            try:
                values = self.build(source, path)
            finally:
                for p, mark in self.marks.items():
                    own_marks.setdefault(p, mark)
                self.marks = own_marks
            for key, value in values.items():
                out.setdefault(key, value)

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

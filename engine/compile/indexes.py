"""Building a policy's rule indexes (engine.plan.tree) from the rules' conditions.

Each rule is filed under its most popular *key atom* (a top-level conjunct `feature == c`,
`feature in [...]` or `feature <op> number`); the rest of its condition is compiled to a
closure tested once the atom holds. Rules with no such atom go to a plain scan.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine.compile.predicates import (
    NUMERIC_FEATURES,
    SET_FEATURES,
    compile_condition,
    getter,
)
from engine.config.specs import AllOf, Compare, Condition
from engine.plan.tree import Entry, HashIndex, Index, RangeIndex, Rule, Scan

Atom = tuple[str, str, Compare, Condition | None]  # (kind, feature, atom, rest)


def build_indexes(
    conditions: Sequence[Condition | None], rules: Sequence[Rule]
) -> tuple[Index, ...]:
    """File each rule under its best key atom (None: not indexable, scanned)."""
    options = [_atoms(c) if c is not None else [] for c in conditions]
    popularity: dict[tuple[str, str], int] = {}
    for atoms in options:
        for kind, feature, _, _ in atoms:
            popularity[(kind, feature)] = popularity.get((kind, feature), 0) + 1
    hashed: dict[str, list[tuple[Compare, Entry]]] = {}
    ranged: dict[str, list[tuple[Compare, Entry]]] = {}
    scan: list[Entry] = []
    for rule, atoms in zip(rules, options, strict=True):
        if not atoms:
            scan.append(Entry(rule.index, rule, rule.test))
            continue
        kind, feature, atom, rest = max(atoms, key=lambda a: popularity[(a[0], a[1])])
        entry = Entry(rule.index, rule, compile_condition(rest) if rest is not None else None)
        (hashed if kind == "hash" else ranged).setdefault(feature, []).append((atom, entry))
    indexes: list[Index] = [_hash_index(f, items) for f, items in hashed.items()]
    indexes += [_range_index(f, items) for f, items in ranged.items()]
    if scan:
        indexes.append(Scan(tuple(scan)))
    return tuple(indexes)


def _atoms(cond: Condition) -> list[Atom]:
    """Indexable comparisons `cond` requires, each with the rest of the condition."""
    parts = list(cond.all_) if isinstance(cond, AllOf) else [cond]
    found: list[Atom] = []
    for i, part in enumerate(parts):
        if not isinstance(part, Compare):
            continue
        kind = _kind(part)
        if kind is None:
            continue
        others = parts[:i] + parts[i + 1 :]
        rest: Condition | None = None
        if len(others) == 1:
            rest = others[0]
        elif others:
            rest = AllOf.model_validate({"all": others})
        found.append((kind, part.feature, part, rest))
    return found


def _kind(cmp: Compare) -> str | None:
    op, value = cmp.operator
    if cmp.feature in SET_FEATURES:
        return None
    if op == "eq" and value is not None:
        return "hash"
    if op == "in" and value and all(v is not None for v in value):
        return "hash"
    numeric = cmp.feature in NUMERIC_FEATURES or cmp.feature.startswith("metadata.")
    if op in ("gt", "ge", "lt", "le") and numeric:
        return "range"
    return None


def _hash_index(feature: str, items: list[tuple[Compare, Entry]]) -> HashIndex:
    table: dict[Any, list[Entry]] = {}
    for atom, entry in items:
        op, value = atom.operator
        keys = [value] if op == "eq" else list(value)
        for key in _distinct(keys):
            bucket = table.setdefault(key, [])
            if not bucket or bucket[-1] is not entry:
                bucket.append(entry)
    # A plain dict, never changed after this: its get is a little faster than a proxy's.
    frozen = {k: tuple(sorted(v, key=lambda e: e.index)) for k, v in table.items()}
    key = feature.removeprefix("metadata.") if feature.startswith("metadata.") else None
    return HashIndex(feature, getter(feature), frozen, key)


def _distinct(keys: list[Any]) -> list[Any]:
    out: list[Any] = []
    for key in keys:
        if all(key != k for k in out):
            out.append(key)
    return out


def _range_index(feature: str, items: list[tuple[Compare, Entry]]) -> RangeIndex:
    bounds = tuple(sorted({float(atom.operator[1]) for atom, _ in items}))
    samples = _region_samples(bounds)
    regions = []
    for value in samples:
        holding = [e for atom, e in items if _holds(*atom.operator, value)]
        regions.append(tuple(sorted(holding, key=lambda e: e.index)))
    return RangeIndex(feature, getter(feature), bounds, tuple(regions))


def _region_samples(bounds: tuple[float, ...]) -> list[float]:
    """One value inside each of the 2n+1 regions: below, at, between, ..., above."""
    if not bounds:
        return [0.0]
    samples = [bounds[0] - 1.0]
    for i, b in enumerate(bounds):
        samples.append(b)
        upper = bounds[i + 1] if i + 1 < len(bounds) else b + 2.0
        samples.append((b + upper) / 2)
    return samples


def _holds(op: str, constant: Any, value: float) -> bool:
    bound = float(constant)
    if op == "gt":
        return value > bound
    if op == "ge":
        return value >= bound
    if op == "lt":
        return value < bound
    return value <= bound

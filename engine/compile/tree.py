"""The compiled shape of one policy: rules indexed for a fast first-match, and route leaves.

A policy's rules are ordered, first match wins. Testing 50 closures per request is too slow,
so each rule is filed under one *key atom*: a comparison its condition requires (a top-level
conjunct). `feature == c` / `feature in [...]` go into a hash index on that feature;
`feature > c` (and >=, <, <=) into a range index whose regions between constants each hold
the rules that region satisfies; rules with no such atom into a plain scan. To decide, each
index yields its lowest-numbered rule whose remaining test holds, skipping anything numbered
above the best found so far; the lowest number wins. That is exactly "first match in source
order", which a property test checks against a naive interpreter.

Leaves are `Leaf` (a RoutePlan plus pre-digested candidates) or `Goto` (another policy).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.compile.plan import Features, ModelPlan, RoutePlan
from engine.compile.predicates import (
    NUMERIC_FEATURES,
    SET_FEATURES,
    Getter,
    Predicate,
    compile_condition,
    getter,
)
from engine.config.specs import AllOf, Compare, Condition


@dataclass(frozen=True, slots=True)
class Candidate:
    """A statically eligible model with what selection needs, pre-extracted for speed."""

    model: ModelPlan
    capabilities: frozenset[str]
    context_window: int
    static_score: float  # the strategy's static key (quality, -latency, weight, position)
    order: int  # position in the static order
    input_price: float | None = None  # copied from the model: read on every request
    output_price: float | None = None
    max_output: int = 0
    balance_part: float = 0.0  # balanced: the quality + latency share, over all candidates


def candidate(model: ModelPlan, static_score: float, order: int) -> Candidate:
    """A Candidate for `model` with its hot fields copied out."""
    return Candidate(
        model,
        model.capabilities,
        model.context_window,
        static_score,
        order,
        model.input_price,
        model.output_price,
        model.max_output,
    )


# (model, input price, output price, default_max_tokens * output price,
#  max_output * output price, static score or balanced best score): see compiler._priced.
PricedRow = tuple[ModelPlan, float, float, float, float, float]


@dataclass(frozen=True, slots=True)
class Leaf:
    """Where routing ends: the route and its candidates, in the strategy's static order."""

    route: RoutePlan
    candidates: tuple[Candidate, ...]
    chain: tuple[Candidate, ...]  # explicit fallbacks not already among the candidates
    eliminated: tuple[tuple[str, str], ...]  # decided at compile time (filters, disabled)
    sort: str  # "static", "cost", "balanced", "local_first", "capability_match"
    weights: tuple[float, float, float] = (1.0, 1.0, 1.0)  # balanced: cost, quality, latency
    min_context: int = 0  # smallest context window among candidates: enables a fast path
    # When every candidate has both prices and the sort is static, cost or balanced: each
    # candidate's hot figures, so the commonest request (nothing to drop) is ranked in one
    # tight pass.
    priced: tuple[PricedRow, ...] | None = None
    cost_share: float = 0.0  # balanced: the cost weight over the sum of weights


@dataclass(frozen=True, slots=True)
class Goto:
    """Hand the request to another policy (a rule with `policy:`)."""

    policy: str

    @property
    def step(self) -> str:
        return f"-> policy `{self.policy}`"


Target = Leaf | Goto


@dataclass(frozen=True, slots=True)
class Rule:
    index: int
    name: str
    test: Predicate
    target: Target
    description: str
    step: str = ""  # the line this rule adds to a Selection's path, built once


@dataclass(frozen=True, slots=True)
class Entry:
    """A rule filed under an index; `rest` is what remains to test once the key atom holds."""

    index: int
    rule: Rule
    rest: Predicate | None


def _first(entries: tuple[Entry, ...], features: Features, best: int) -> Rule | None:
    for entry in entries:
        if entry.index >= best:
            return None
        if entry.rest is None or entry.rest(features):
            return entry.rule
    return None


@dataclass(frozen=True, slots=True)
class HashIndex:
    """Rules requiring `feature == constant` (or `in` a list), bucketed by constant."""

    feature: str
    get: Getter
    table: Mapping[Any, tuple[Entry, ...]]
    metadata_key: str | None = None  # metadata.<key>: read here, without a getter's frame

    def first(self, features: Features, best: int) -> Rule | None:
        key = self.metadata_key
        try:
            if key is not None:  # an absent key finds no bucket: None is never a key here
                bucket = self.table.get(features.metadata.get(key))
            else:
                bucket = self.table.get(self.get(features))
        except TypeError:  # an unhashable metadata value equals no YAML scalar
            return None
        if bucket is None:
            return None
        for entry in bucket:  # _first, inlined: this runs on every request
            if entry.index >= best:
                return None
            if entry.rest is None or entry.rest(features):
                return entry.rule
        return None


@dataclass(frozen=True, slots=True)
class RangeIndex:
    """Rules requiring `feature <op> number`; regions between constants list their rules."""

    feature: str
    get: Getter
    bounds: tuple[float, ...]  # sorted distinct constants
    regions: tuple[tuple[Entry, ...], ...]  # 2 * len(bounds) + 1 regions

    def first(self, features: Features, best: int) -> Rule | None:
        value = self.get(features)
        if type(value) not in (int, float) or value != value:  # not a number, or NaN
            return None
        bounds = self.bounds
        i = bisect_left(bounds, value)
        region = 2 * i + 1 if i < len(bounds) and bounds[i] == value else 2 * i
        for entry in self.regions[region]:  # _first, inlined as in HashIndex
            if entry.index >= best:
                return None
            if entry.rest is None or entry.rest(features):
                return entry.rule
        return None


@dataclass(frozen=True, slots=True)
class Scan:
    """Rules with no indexable atom, tested in order."""

    entries: tuple[Entry, ...]

    def first(self, features: Features, best: int) -> Rule | None:
        return _first(self.entries, features, best)


Index = HashIndex | RangeIndex | Scan
_NO_RULE = 1 << 30


@dataclass(frozen=True, slots=True)
class PolicyTree:
    """One compiled policy: rule indexes, then the default leaf."""

    name: str
    indexes: tuple[Index, ...]
    default: Target
    rules: tuple[Rule, ...]  # all rules in source order, for explain and tests
    default_step: str = ""

    def decide(self, features: Features) -> tuple[Rule | None, Target]:
        best = _NO_RULE
        found: Rule | None = None
        for index in self.indexes:
            rule = index.first(features, best)
            if rule is not None:
                best, found = rule.index, rule
        if found is None:
            return None, self.default
        return found, found.target


# --- building ---------------------------------------------------------------------------

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

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
This module is the run-time half: the values and `decide`. Building the indexes from rule
conditions is engine.compile.indexes.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from engine.plan.values import Features, ModelPlan, RoutePlan

#: A compiled rule condition, and a feature accessor: closures built by engine.compile.
Predicate = Callable[[Features], bool]
Getter = Callable[[Features], Any]


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
        model=model,
        capabilities=model.capabilities,
        context_window=model.context_window,
        static_score=static_score,
        order=order,
        input_price=model.input_price,
        output_price=model.output_price,
        max_output=model.max_output,
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
    weights: tuple[float, float, float] = (1.0, 1.0, 1.0)  # balanced: cost, quality, latency
    min_context: int = 0  # smallest context window among candidates: enables a fast path
    # When every candidate has both prices and the strategy has a fast path: each
    # candidate's hot figures, so the commonest request (nothing to drop) is ranked in one
    # tight pass (Strategy.rank_priced).
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
        return _first(bucket, features, best)


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
        return _first(self.regions[region], features, best)


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

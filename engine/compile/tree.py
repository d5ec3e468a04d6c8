"""The compiled shape of one policy: an ordered decision tree with route leaves.

A policy's rules are an ordered list ("first match wins"). Walking 50 closures per
request is too slow, so consecutive rules that each require `feature == constant` on the
same feature are grouped into a `Switch`: one dict lookup finds the few rules that can
still match, in their original order. Everything else is a `Chain` of tests. The order of
rules is preserved exactly: blocks are consecutive, and inside a Switch bucket the rules
keep their relative order. Leaves are `Leaf` (a RoutePlan plus pre-digested candidates) or
`Goto` (hand the request to another policy).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from engine.compile.plan import Features, ModelPlan, RoutePlan
from engine.compile.predicates import Getter, Predicate


@dataclass(frozen=True, slots=True)
class Candidate:
    """A statically eligible model with what selection needs, pre-extracted for speed."""

    model: ModelPlan
    capabilities: frozenset[str]
    context_window: int
    static_score: float  # the strategy's static key (quality, -latency, weight, position)
    order: int  # position in the static order


@dataclass(frozen=True, slots=True)
class Leaf:
    """Where routing ends: the route and its candidates, in the strategy's static order."""

    route: RoutePlan
    candidates: tuple[Candidate, ...]
    chain: tuple[Candidate, ...]  # explicit fallbacks not already among the candidates
    eliminated: tuple[tuple[str, str], ...]  # decided at compile time (filters, disabled)
    sort: str  # "static", "cost", "balanced", "local_first", "capability_match"
    weights: tuple[float, float, float] = (1.0, 1.0, 1.0)  # balanced: cost, quality, latency


@dataclass(frozen=True, slots=True)
class Goto:
    """Hand the request to another policy (a rule with `policy:`)."""

    policy: str


Target = Leaf | Goto


@dataclass(frozen=True, slots=True)
class Rule:
    index: int
    name: str
    test: Predicate
    target: Target
    description: str


@dataclass(frozen=True, slots=True)
class Chain:
    """Consecutive rules tested one after another."""

    rules: tuple[Rule, ...]

    def decide(self, features: Features) -> Rule | None:
        for rule in self.rules:
            if rule.test(features):
                return rule
        return None


@dataclass(frozen=True, slots=True)
class Switch:
    """Consecutive rules that each need `feature == key`; `rest` is the remaining test."""

    get: Getter
    table: Mapping[Any, tuple[tuple[Rule, Predicate | None], ...]]

    def decide(self, features: Features) -> Rule | None:
        try:
            bucket = self.table.get(self.get(features), ())
        except TypeError:  # an unhashable metadata value never equals a YAML scalar
            return None
        for rule, rest in bucket:
            if rest is None or rest(features):
                return rule
        return None


Block = Chain | Switch


@dataclass(frozen=True, slots=True)
class PolicyTree:
    """One compiled policy: blocks of rules in order, then the default leaf."""

    name: str
    blocks: tuple[Block, ...]
    default: Target
    rules: tuple[Rule, ...]  # all rules in source order, for explain and tests

    def decide(self, features: Features) -> tuple[Rule | None, Target]:
        for block in self.blocks:
            rule = block.decide(features)
            if rule is not None:
                return rule, rule.target
        return None, self.default


KeyFn = Callable[[Features], Any]

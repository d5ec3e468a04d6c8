"""Static analysis of a policy's rules: meaningless tests, rules that never match, shadowing.

It lives in compile/ because it decides rules with the compiled predicates themselves, so
the analysis and the router can never disagree about what a condition means.

How: every operator in the language is piecewise constant between the constants a rule
mentions (a threshold, a value, a tag). So sampling each feature at those constants, just
around them and at a value none mentions covers every distinct region, and deciding a rule
on all combinations of those samples is exact. Rule B is shadowed when every sample
matching B also matches an earlier rule A (B can never be reached); a rule matching no
sample can never match. Rules using `matches` (regexes) are not analysed. When the sample
space is too large the pair is skipped, never guessed.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

from engine.compile.predicates import (
    NUMERIC_FEATURES,
    SET_FEATURES,
    check_compare,
    compile_condition,
)
from engine.config.load import Document, join_path
from engine.config.specs import AllOf, AnyOf, Compare, Condition, NotOf, PolicySpec
from engine.errors import Diagnostic
from engine.plan.tree import Predicate
from engine.plan.values import Features

MAX_SAMPLES = 4096
_OTHER = "\x00other"
_ABSENT = object()


def check_rules(doc: Document, spec: PolicySpec) -> list[Diagnostic]:
    problems: list[Diagnostic] = []
    meaningful: list[tuple[int, Condition, Predicate]] = []
    for i, rule in enumerate(spec.rules):
        path = join_path(join_path("rules", i), "when")
        bad = [check_compare(c) for c in compares(rule.when)]
        errors = [b for b in bad if b]
        problems += [doc.diagnostic(path, msg) for msg in errors]
        if not errors:
            meaningful.append((i, rule.when, compile_condition(rule.when)))
    problems += _dead_rules(doc, spec, meaningful)
    return problems


def _dead_rules(
    doc: Document, spec: PolicySpec, rules: list[tuple[int, Condition, Predicate]]
) -> Iterator[Diagnostic]:
    # What depends on one rule only is worked out once, up front; the earlier rules worth a
    # pair check come from an index (checking all of them made this quadratic).
    facts = [(i, cond, test, _uses_regex(cond), _required_values(cond)) for i, cond, test in rules]
    index = _PinIndex()
    for pos, (i, cond, test, regex, mine) in enumerate(facts):
        earlier_positions = index.compatible(mine)
        index.add(pos, mine)
        if regex:
            continue
        path = join_path(join_path("rules", i), "when")
        samples = _samples([cond])
        matching = list(itertools.islice(filter(test, samples), 64)) if samples is not None else []
        if samples is not None and not matching:
            yield doc.diagnostic(path, f"rule `{_label(spec, i)}` can never match")
            continue
        for j, earlier, earlier_test, earlier_regex, theirs in map(
            facts.__getitem__, earlier_positions
        ):
            if earlier_regex or _disjoint(mine, theirs):
                continue
            if any(not earlier_test(s) for s in matching):
                continue  # a request matching this rule but not the earlier one: not shadowed
            pair = _samples([cond, earlier])
            if pair is None:
                continue
            if all(earlier_test(s) for s in pair if test(s)):
                msg = f"rule `{_label(spec, i)}` is shadowed by earlier rule `{_label(spec, j)}`"
                yield doc.diagnostic(path, msg, hint="reorder the rules or narrow the earlier one")
                break


class _PinIndex:
    """The earlier rules that could match together with a rule: the only pairs worth checking.

    Checking each rule against every earlier one made `validate` quadratic (2,000 rules:
    2 million pair checks, 3.8 s). Large rule sets mostly pin a feature to values
    (`task_type eq code`), and two rules pinning one feature to disjoint values never match
    together. So, per feature, this keeps the positions of earlier rules that pin it (by
    value) and of those that leave it free; a rule's candidates are those of its most
    selective pinned feature (all earlier rules when it pins nothing). Each list is kept in
    rule order, so the first shadowing rule found is still the earliest."""

    def __init__(self) -> None:
        self._count = 0
        self._free: dict[str, list[int]] = {}  # feature -> earlier rules not pinning it
        self._pinned: dict[str, dict[Any, list[int]]] = {}  # feature -> value -> rules

    def compatible(self, mine: dict[str, frozenset[Any]]) -> list[int] | range:
        """Positions of earlier rules not ruled out by one of `mine`'s pins, ascending."""
        best: list[int] | range = range(self._count)
        for feature, values in mine.items():
            if feature not in self._free:
                continue  # no earlier rule pins it: every one is compatible on it
            by_value, free = self._pinned[feature], self._free[feature]
            if len(free) + sum(len(by_value.get(v, ())) for v in values) >= len(best):
                continue  # no more selective than what we have
            found = set(free)
            for value in values:
                found.update(by_value.get(value, ()))
            best = sorted(found)
        return best

    def add(self, pos: int, mine: dict[str, frozenset[Any]]) -> None:
        """Record the rule at `pos` (positions are added in order)."""
        for feature in mine.keys() - self._free.keys():
            self._free[feature] = list(range(self._count))  # no earlier rule pinned it
            self._pinned[feature] = {}
        for feature, free in self._free.items():
            if feature in mine:
                for value in mine[feature]:
                    self._pinned[feature].setdefault(value, []).append(pos)
            else:
                free.append(pos)
        self._count = pos + 1


def _required_values(cond: Condition) -> dict[str, frozenset[Any]]:
    """Values a scalar feature must take for `cond` to hold (from top-level eq / in)."""
    parts = cond.all_ if isinstance(cond, AllOf) else [cond]
    out: dict[str, frozenset[Any]] = {}
    for part in parts:
        if not isinstance(part, Compare) or part.feature in SET_FEATURES:
            continue
        op, value = part.operator
        if op == "eq" and value is not None:
            allowed = frozenset([value])
        elif op == "in" and value is not None:
            allowed = frozenset(value)
        else:
            continue
        out[part.feature] = out[part.feature] & allowed if part.feature in out else allowed
    return out


def _disjoint(a: dict[str, frozenset[Any]], b: dict[str, frozenset[Any]]) -> bool:
    """True when no request can satisfy both: a shared feature has no common value."""
    return any(feature in b and not (values & b[feature]) for feature, values in a.items())


def _label(spec: PolicySpec, i: int) -> str:
    return spec.rules[i].name or f"rules[{i}]"


def compares(cond: Condition) -> Iterator[Compare]:
    """Every comparison inside `cond`, depth first."""
    if isinstance(cond, AllOf):
        for c in cond.all_:
            yield from compares(c)
    elif isinstance(cond, AnyOf):
        for c in cond.any_:
            yield from compares(c)
    elif isinstance(cond, NotOf):
        yield from compares(cond.not_)
    else:
        yield cond


def _uses_regex(cond: Condition) -> bool:
    return any(c.operator[0] == "matches" for c in compares(cond))


def _samples(conds: list[Condition]) -> Iterator[Features] | None:
    """Feature combinations covering every region of `conds`, or None when too many."""
    constants: dict[str, list[Any]] = {}
    for cond in conds:
        for cmp in compares(cond):
            _, value = cmp.operator
            values = value if isinstance(value, list) else [value]
            constants.setdefault(cmp.feature, []).extend(values)
    axes = {feature: _axis(feature, values) for feature, values in constants.items()}
    size = 1
    for axis in axes.values():
        size *= len(axis)
    if size > MAX_SAMPLES:
        return None
    names = list(axes)
    return (
        _features(dict(zip(names, combo, strict=True)))
        for combo in itertools.product(*axes.values())
    )


def _axis(feature: str, constants: list[Any]) -> list[Any]:
    if feature in SET_FEATURES:
        items = sorted({str(c) for c in constants if isinstance(c, str)})
        if len(items) > 8:
            return list(range(MAX_SAMPLES + 1))  # too many subsets: forces a skip
        subsets = itertools.chain.from_iterable(
            itertools.combinations(items, n) for n in range(len(items) + 1)
        )
        return [frozenset(s) for s in subsets]
    numbers = sorted(
        {float(c) for c in constants if isinstance(c, int | float) and not isinstance(c, bool)}
    )
    points: list[Any] = []
    for n in numbers:
        points += [n - 1, n - 0.5, n, n + 0.5, n + 1]
    if numbers:
        points += [numbers[0] - 10, numbers[-1] + 10]
    if feature in NUMERIC_FEATURES:
        points = sorted(
            {int(p) if feature != "budget_usd" and p == int(p) else p for p in points if p >= 0}
            | {0}
        )
        if feature != "budget_usd":
            points = [p for p in points if isinstance(p, int)]
    others = [c for c in constants if not (isinstance(c, int | float) and not isinstance(c, bool))]
    optional = feature not in ("input_tokens",)
    return list(dict.fromkeys([*points, *others, _OTHER])) + ([_ABSENT] if optional else [])


def _features(values: dict[str, Any]) -> Features:
    plain: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    for feature, value in values.items():
        if feature.startswith("metadata."):
            if value is not _ABSENT:
                metadata[feature.removeprefix("metadata.")] = value
        elif value is _ABSENT:
            plain[feature] = None if feature not in SET_FEATURES else frozenset()
        elif feature in ("input_tokens",) and not isinstance(value, int):
            plain[feature] = 0
        else:
            plain[feature] = value
    return Features(metadata=metadata, **plain)

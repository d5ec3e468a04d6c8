"""Rule conditions compiled to plain closures over `Features`, decided once at compile time.

Why closures: a rule is tested on every request, so each comparison is turned into one
small function with its operator, constant and feature accessor already bound; no dict
lookups, no dispatch on operator names at run time. The semantics here are the language's
semantics: `link` reuses them to find rules that can never match or are shadowed.

Scalar features (task_type, input_tokens, output_tokens, workspace, budget_usd,
metadata.<key>) take eq, ne, gt, ge, lt, le, in, not_in, contains (substring), exists and
matches (regex search). Set features (capabilities, tags) take contains (member), in (any
of), not_in (none of) and exists (non-empty). A missing value fails every test except
ne, not_in and `exists: false`.
"""

from __future__ import annotations

import re
from operator import attrgetter
from typing import Any

from engine.config.specs import AllOf, AnyOf, Compare, Condition, NotOf
from engine.plan.tree import Getter, Predicate
from engine.plan.values import Features

SET_FEATURES = frozenset({"capabilities", "tags"})
NUMERIC_FEATURES = frozenset({"input_tokens", "output_tokens", "budget_usd"})
SCALAR_FEATURES = frozenset({"task_type", "workspace"}) | NUMERIC_FEATURES
SET_OPERATORS = frozenset({"contains", "in", "not_in", "exists"})
_MISSING = object()


class ConditionError(ValueError):
    """A condition that is well-formed YAML but meaningless (e.g. `gt` on a tag set)."""


def compile_condition(cond: Condition) -> Predicate:
    """One closure deciding `cond` for a request's features."""
    if isinstance(cond, AllOf):
        parts = tuple(compile_condition(c) for c in cond.all_)
        return lambda f: all(p(f) for p in parts)
    if isinstance(cond, AnyOf):
        parts = tuple(compile_condition(c) for c in cond.any_)
        return lambda f: any(p(f) for p in parts)
    if isinstance(cond, NotOf):
        inner = compile_condition(cond.not_)
        return lambda f: not inner(f)
    return compile_compare(cond)


def getter(feature: str) -> Getter:
    """How to read one feature from Features (metadata keys read the metadata mapping)."""
    if feature.startswith("metadata."):
        key = feature.removeprefix("metadata.")
        return lambda f: f.metadata.get(key, _MISSING)
    return attrgetter(feature)  # in C: no Python frame per read


def compile_compare(cmp: Compare) -> Predicate:
    op, value = cmp.operator
    get = getter(cmp.feature)
    if cmp.feature in SET_FEATURES:
        return _set_test(cmp.feature, op, value, get)
    return _scalar_test(op, value, get)


def check_compare(cmp: Compare) -> str | None:
    """Why this comparison is meaningless, or None; link reports it with the rule's location."""
    op, value = cmp.operator
    if cmp.feature in SET_FEATURES and op not in SET_OPERATORS:
        hint = "use contains, in, not_in or exists"
        return f"`{op}` does not apply to the set feature `{cmp.feature}`; {hint}"
    if op in ("gt", "ge", "lt", "le") and cmp.feature in ("task_type", "workspace"):
        return f"`{op}` compares numbers but `{cmp.feature}` is text"
    if op == "matches":
        try:
            re.compile(str(value))
        except re.error as exc:
            return f"invalid regular expression `{value}`: {exc}"
    return None


def _set_test(feature: str, op: str, value: Any, get: Getter) -> Predicate:
    if op == "contains":
        return lambda f: value in get(f)
    if op == "in":
        wanted = frozenset(value)
        return lambda f: not wanted.isdisjoint(get(f))
    if op == "not_in":
        unwanted = frozenset(value)
        return lambda f: unwanted.isdisjoint(get(f))
    if op == "exists":
        return lambda f: bool(get(f)) is bool(value)
    raise ConditionError(f"`{op}` does not apply to the set feature `{feature}`")


def _scalar_test(op: str, value: Any, get: Getter) -> Predicate:
    if op == "eq":
        if value is not None:  # then a missing value (None or _MISSING) never equals it
            return lambda f: bool(get(f) == value)
        return lambda f: _present(v := get(f)) and v == value
    if op == "ne":
        return lambda f: not (_present(v := get(f)) and v == value)
    if op in ("gt", "ge", "lt", "le"):
        return _ordering(op, float(value), get)
    if op == "in":
        options = tuple(value)
        if all(o is not None for o in options):  # as for eq: a missing value is in none
            return lambda f: get(f) in options
        return lambda f: _present(v := get(f)) and v in options
    if op == "not_in":
        options = tuple(value)
        return lambda f: not (_present(v := get(f)) and v in options)
    if op == "contains":
        return lambda f: isinstance(v := get(f), str) and value in v
    if op == "exists":
        return lambda f: _present(get(f)) is bool(value)
    if op == "matches":
        pattern = re.compile(str(value))
        return lambda f: isinstance(v := get(f), str) and pattern.search(v) is not None
    raise ConditionError(f"unknown operator `{op}`")


def _ordering(op: str, bound: float, get: Getter) -> Predicate:
    def number(f: Features) -> float | None:
        v = get(f)
        return v if isinstance(v, int | float) and not isinstance(v, bool) else None

    if op == "gt":
        return lambda f: (v := number(f)) is not None and v > bound
    if op == "ge":
        return lambda f: (v := number(f)) is not None and v >= bound
    if op == "lt":
        return lambda f: (v := number(f)) is not None and v < bound
    return lambda f: (v := number(f)) is not None and v <= bound


def _present(value: Any) -> bool:
    return value is not None and value is not _MISSING


def describe(cond: Condition) -> str:
    """A one-line human rendering of a condition, for explain output and messages."""
    if isinstance(cond, AllOf):
        return " and ".join(_grouped(c) for c in cond.all_)
    if isinstance(cond, AnyOf):
        return " or ".join(_grouped(c) for c in cond.any_)
    if isinstance(cond, NotOf):
        return f"not {_grouped(cond.not_)}"
    op, value = cond.operator
    return f"{cond.feature} {op} {value!r}"


def _grouped(cond: Condition) -> str:
    text = describe(cond)
    return f"({text})" if isinstance(cond, AllOf | AnyOf) else text

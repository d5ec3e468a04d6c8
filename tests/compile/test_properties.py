"""Property tests: the compiled tree and ranking agree with a naive interpreter of the specs.

Random registries, policies (rules with all/any/not and every operator) and requests are
generated; the reference below re-implements the language the obvious way (walk rules in
order, evaluate conditions recursively, filter, check) and must agree with select() on the
deciding rule and on the set of eligible candidates; the ranking must respect each
strategy's order and never include a candidate breaking a requirement.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.compile.compiler import check_config
from engine.config.project import load_data
from engine.errors import NoCandidateError
from engine.plan import select
from engine.plan.values import Features

CAPS = ["chat", "code", "tools", "vision", "json"]
TASKS = ["a", "b", "c"]
NUMS = [0, 100, 1000, 5000]
MISSING = object()
WEIGHTS = ("cost", "quality", "latency")


# --- generators ---------------------------------------------------------------------------


@st.composite
def registries(draw: Any) -> dict[str, Any]:
    models = {}
    for i in range(draw(st.integers(2, 7))):
        provider = draw(st.sampled_from(["mock", "up", "down"]))
        priced = provider == "mock" or draw(st.integers(0, 3)) > 0
        models[f"{provider}/m{i}"] = {
            "capabilities": draw(st.lists(st.sampled_from(CAPS), unique=True, max_size=4)),
            "context_window": draw(st.sampled_from([500, 1000, 8000, 100000])),
            "quality": draw(st.sampled_from([0.2, 0.5, 0.8, 0.9])),
            "latency_ms": draw(st.sampled_from([10, 100, 1000])),
            **(
                {
                    "input_price": draw(st.sampled_from([0.1, 1.0, 3.0])),
                    "output_price": draw(st.sampled_from([0.2, 2.0, 15.0])),
                }
                if priced
                else {}
            ),
        }
    providers = {
        "mock": {"protocol": "mock"},
        "up": {"protocol": "openai", "base_url": "http://127.0.0.1:9", "api_key": "k"},
        "down": {"protocol": "openai", "base_url": "http://127.0.0.1:9", "api_key": "${UNSET_KEY}"},
    }
    return {"providers": providers, "models": models}


def compares() -> Any:
    return st.one_of(
        st.builds(
            lambda op, v: {"feature": "task_type", op: v},
            st.sampled_from(["eq", "ne"]),
            st.sampled_from(TASKS),
        ),
        st.builds(
            lambda op, v: {"feature": "task_type", op: v},
            st.sampled_from(["in", "not_in"]),
            st.lists(st.sampled_from(TASKS), min_size=1, max_size=2, unique=True),
        ),
        st.builds(
            lambda op, v: {"feature": "input_tokens", op: v},
            st.sampled_from(["gt", "ge", "lt", "le", "eq"]),
            st.sampled_from(NUMS),
        ),
        st.builds(
            lambda op, v: {"feature": "metadata.k", op: v},
            st.sampled_from(["eq", "gt", "le"]),
            st.sampled_from([1, 2]),
        ),
        st.builds(lambda v: {"feature": "tags", "contains": v}, st.sampled_from(["x", "y"])),
        st.builds(
            lambda v: {"feature": "capabilities", "in": v},
            st.lists(st.sampled_from(CAPS), min_size=1, max_size=2, unique=True),
        ),
        st.builds(lambda v: {"feature": "workspace", "exists": v}, st.booleans()),
        st.builds(
            lambda v: {"feature": "metadata.name", "contains": v}, st.sampled_from(["ab", "z"])
        ),
    )


nested = st.recursive(
    compares(),
    lambda inner: st.one_of(
        st.builds(lambda xs: {"all": xs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda xs: {"any": xs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda x: {"not": x}, inner),
    ),
    max_leaves=5,
)
conditions = st.one_of(
    compares(), st.builds(lambda a, b: {"all": [a, b]}, compares(), compares()), nested
)
STRATS = [
    "cost_optimized",
    "quality_optimized",
    "latency_optimized",
    "ordered",
    "balanced",
    "local_first",
    "capability_match",
    "weighted",
    "round_robin",
]


@st.composite
def filters(draw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if draw(st.booleans()):
        out["capabilities"] = draw(st.lists(st.sampled_from(CAPS), max_size=2, unique=True))
    if draw(st.booleans()):
        out["min_quality"] = draw(st.sampled_from([0.3, 0.6]))
    if draw(st.booleans()):
        out["max_output_price"] = draw(st.sampled_from([1.0, 5.0]))
    if draw(st.booleans()):
        out["min_context"] = draw(st.sampled_from([800, 5000]))
    if draw(st.booleans()):
        out["local_only"] = True
    return out


@st.composite
def policies(draw: Any, ids: list[str]) -> dict[str, Any]:
    def route() -> dict[str, Any]:
        r: dict[str, Any] = {"strategy": draw(st.sampled_from(STRATS))}
        if r["strategy"] == "balanced" and draw(st.booleans()):
            r["weights"] = {k: draw(st.sampled_from([0.0, 0.5, 2.0])) for k in WEIGHTS}
        if draw(st.booleans()):
            r["candidates"] = draw(st.lists(st.sampled_from(ids), min_size=1, unique=True))
        if draw(st.booleans()):
            r["filters"] = draw(filters())
        if draw(st.booleans()):
            r["fallback"] = {"chain": draw(st.lists(st.sampled_from(ids), max_size=3))}
        if draw(st.booleans()):
            r["budget"] = {"max_cost_per_request": draw(st.sampled_from([0.0001, 0.01]))}
        return r

    policy = route()
    rules = []
    for i in range(draw(st.integers(0, 6))):
        rule: dict[str, Any] = {"name": f"r{i}", "when": draw(conditions)}
        if draw(st.integers(0, 4)) == 0:
            rule["policy"] = "other"
        else:
            rule.update(route())
        rules.append(rule)
    policy["rules"] = rules
    return policy


@st.composite
def features(draw: Any) -> Features:
    meta: dict[str, Any] = {}
    k = draw(st.sampled_from([MISSING, 1, 2, 1.5, "1", [1]]))
    if k is not MISSING:
        meta["k"] = k
    name = draw(st.sampled_from([MISSING, "abc", "zz", 3]))
    if name is not MISSING:
        meta["name"] = name
    return Features(
        task_type=draw(st.sampled_from([None, *TASKS])),
        capabilities=frozenset(draw(st.lists(st.sampled_from(CAPS), max_size=2))),
        input_tokens=draw(st.sampled_from([0, 1, 99, 100, 101, 999, 1000, 4999, 5000, 20000])),
        output_tokens=draw(st.sampled_from([None, 10, 2000])),
        tags=frozenset(draw(st.lists(st.sampled_from(["x", "y", "z"]), max_size=2))),
        workspace=draw(st.sampled_from([None, "w"])),
        metadata=meta,
        budget_usd=draw(st.sampled_from([None, None, 0.001, 1.0])),
    )


# --- the reference interpreter -----------------------------------------------------------


def value_of(f: Features, feature: str) -> Any:
    if feature.startswith("metadata."):
        return f.metadata.get(feature[len("metadata.") :], MISSING)
    return getattr(f, feature)


def is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def holds(cond: dict[str, Any], f: Features) -> bool:
    if "all" in cond:
        return all(holds(c, f) for c in cond["all"])
    if "any" in cond:
        return any(holds(c, f) for c in cond["any"])
    if "not" in cond:
        return not holds(cond["not"], f)
    feature = cond["feature"]
    (op,) = [k for k in cond if k != "feature"]
    want, v = cond[op], value_of(f, feature)
    present = v is not None and v is not MISSING
    if feature in ("tags", "capabilities"):
        return {
            "contains": lambda: want in v,
            "in": lambda: bool(set(want) & v),
            "not_in": lambda: not set(want) & v,
            "exists": lambda: bool(v) == want,
        }[op]()
    if op == "eq":
        return present and v == want
    if op == "ne":
        return not (present and v == want)
    if op == "in":
        return present and v in want
    if op == "not_in":
        return not (present and v in want)
    if op == "exists":
        return present == want
    if op == "contains":
        return isinstance(v, str) and want in v
    if not is_num(v):
        return False
    return {"gt": v > want, "ge": v >= want, "lt": v < want, "le": v <= want}[op]


def merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in base.items() if k != "rules"}
    for k, v in over.items():
        if k in ("name", "when", "policy"):
            continue
        out[k] = {**out[k], **v} if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def reference(
    models: dict[str, Any], routes: dict[str, Any], policy: str, f: Features
) -> tuple[str, str | None, set[str]]:
    spec = routes[policy]
    route, rule = spec, None
    for r in spec.get("rules", []):
        if holds(r["when"], f):
            if "policy" in r:
                return reference(models, routes, r["policy"], f)
            route, rule = merged(spec, r), r["name"]
            break
    return policy, rule, eligible(models, route, f)


def eligible(registry: dict[str, Any], route: dict[str, Any], f: Features) -> set[str]:
    models = registry["models"]
    pool = route.get("candidates") or sorted(m for m in models if not m.startswith("mock/"))
    filt = route.get("filters", {})
    need = f.input_tokens + (f.output_tokens or 0)
    limit = min(
        [
            x
            for x in (f.budget_usd, route.get("budget", {}).get("max_cost_per_request"))
            if x is not None
        ],
        default=None,
    )
    out = set()
    for mid in pool:
        m = models[mid]
        provider = mid.split("/")[0]
        local = provider == "mock"
        pin = m.get("input_price", 0.0 if local else None)
        pout = m.get("output_price", 0.0 if local else None)
        caps = set(m["capabilities"])
        if not set(filt.get("capabilities", [])) <= caps or m["quality"] < filt.get(
            "min_quality", 0
        ):
            continue
        if "max_output_price" in filt and (pout is None or pout > filt["max_output_price"]):
            continue
        if m["context_window"] < filt.get("min_context", 0) or (
            filt.get("local_only") and not local
        ):
            continue
        if provider == "down" or not f.capabilities <= caps or need > m["context_window"]:
            continue
        if limit is not None:
            worst = (
                None
                if pin is None
                else (
                    f.input_tokens * pin
                    + (f.output_tokens or min(4096, m["context_window"])) * pout
                )
                / 1e6
            )
            if worst is None or worst > limit:
                continue
        out.add(mid)
    return out


# --- the properties ----------------------------------------------------------------------


@st.composite
def scenarios(draw: Any) -> tuple[dict[str, Any], dict[str, Any], list[Features]]:
    registry = draw(registries())
    ids = sorted(registry["models"])
    routes = {"main": draw(policies(ids)), "other": {"strategy": "cost_optimized"}}
    return registry, routes, draw(st.lists(features(), min_size=1, max_size=8))


def compiled(registry: dict[str, Any], routes: dict[str, Any]) -> Any:
    plan, _ = check_config(load_data(registry, routes, env={}), {})  # plan even with rule errors
    return plan


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_compiled_tree_decides_like_the_reference(scenario):
    """Same deciding policy and rule, same eligible set, for every generated request."""
    registry, routes, requests = scenario
    plan = compiled(registry, routes)
    for f in requests:
        policy, rule, expected = reference(registry, routes, "main", f)
        try:
            sel = select(plan, "main", f)
        except NoCandidateError:
            assert expected == set()
            continue
        assert (sel.policy, sel.rule) == (policy, rule)
        assert {s.model.id for s in sel.ranked} == expected


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_rankings_respect_requirements_and_strategy(scenario):
    """Rankings and chains only hold eligible models, cost-ordered and without duplicates."""
    # eligible: has every capability, fits the context window, stays within the budget
    registry, routes, requests = scenario
    plan = compiled(registry, routes)
    for f in requests:
        try:
            sel = select(plan, "main", f)
        except NoCandidateError:
            continue
        limit = min(
            [x for x in (f.budget_usd, sel.route.budget.max_cost_per_request) if x is not None],
            default=None,
        )
        picked = [*sel.ranked, *sel.chain]
        ids = [s.model.id for s in picked]
        assert len(ids) == len(set(ids))
        for s in picked:
            assert f.capabilities <= s.model.capabilities
            assert f.input_tokens + (f.output_tokens or 0) <= s.model.context_window
            assert plan.providers[s.model.provider].enabled
            if limit is not None:
                assert s.worst_cost_usd is not None and s.worst_cost_usd <= limit
        if sel.route.strategy.name == "cost_optimized":
            costs = [float("inf") if s.est_cost_usd is None else s.est_cost_usd for s in sel.ranked]
            assert costs == sorted(costs)
        if sel.route.strategy.name == "quality_optimized":
            qualities = [s.model.quality for s in sel.ranked]
            assert qualities == sorted(qualities, reverse=True)
        if sel.route.strategy.name == "ordered":
            order = list(sel.route.candidates)
            assert [order.index(i) for i in ids[: len(sel.ranked)]] == sorted(
                order.index(i) for i in ids[: len(sel.ranked)]
            )


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_policy_hand_offs_terminate(scenario):
    """Following rule hand-offs and fallback policies always ends, without revisiting a policy."""
    registry, routes, requests = scenario
    routes["other"]["fallback"] = {"policy": "last"}
    routes["last"] = {"strategy": "ordered"}
    plan = compiled(registry, routes)
    for f in requests:
        seen, name = [], "main"
        while name is not None:
            assert name not in seen
            seen.append(name)
            try:
                sel = select(plan, name, f)
            except NoCandidateError:
                break
            name = sel.route.fallback_policy


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_ranked_figures_follow_the_documented_formulas(scenario):
    """Every ranked cost, score and tie follows the documented formulas exactly."""
    # costs are ModelPlan.cost's to the bit; cost_optimized scores are minus the estimate;
    # balanced scores are the weighted blend over the ranked candidates; ties keep static order
    _assert_formulas(scenario)


def _assert_formulas(scenario: Any) -> None:
    registry, routes, requests = scenario
    plan = compiled(registry, routes)
    for f in requests:
        try:
            sel = select(plan, "main", f)
        except NoCandidateError:
            continue
        route = sel.route
        expected = f.output_tokens or route.default_max_tokens
        for s in (*sel.ranked, *sel.chain):
            assert s.est_cost_usd == s.model.cost(f.input_tokens, expected)
            cap = f.output_tokens or s.model.max_output
            assert s.worst_cost_usd == s.model.cost(f.input_tokens, cap)
        name = route.strategy.name
        if name in ("cost_optimized", "balanced"):
            _check_balanced(sel) if name == "balanced" else _check_cost(sel)
            position = {m: i for i, m in enumerate(route.candidates)}
            for a, b in zip(sel.ranked, sel.ranked[1:], strict=False):
                assert a.score >= b.score
                if a.score == b.score:
                    assert position[a.model.id] < position[b.model.id]


def _check_cost(sel: Any) -> None:
    for s in sel.ranked:
        assert s.score == (float("-inf") if s.est_cost_usd is None else -s.est_cost_usd)


def _check_balanced(sel: Any) -> None:
    w = sel.route.strategy.weights or dict.fromkeys(WEIGHTS, 1.0)
    wc, wq, wl = (w.get(k, 1.0) for k in WEIGHTS)
    total = (wc + wq + wl) or 1.0
    costs = [s.est_cost_usd for s in sel.ranked if s.est_cost_usd is not None]
    max_cost = max(costs, default=0.0) or 1.0
    max_lat = max((s.model.latency_ms for s in sel.ranked), default=0.0) or 1.0
    for s in sel.ranked:
        cheap = 0.0 if s.est_cost_usd is None else 1.0 - s.est_cost_usd / max_cost
        fast = 1.0 - s.model.latency_ms / max_lat
        blend = (wc * cheap + wq * s.model.quality + wl * fast) / total
        assert math.isclose(s.score, blend, rel_tol=1e-9, abs_tol=1e-12)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_fast_path_ranks_like_the_checked_path(scenario):
    """The unchecked fast path ranks the same models, costs and scores as the checked path."""
    # a budget no candidate can reach forces the checked path
    _assert_fast_like_checked(scenario)


def _assert_fast_like_checked(scenario: Any) -> None:
    registry, routes, requests = scenario
    plan = compiled(registry, routes)
    for f in requests:
        fast = dataclasses.replace(f, capabilities=frozenset(), budget_usd=None)
        try:
            a = select(plan, "main", fast)
            b = select(plan, "main", dataclasses.replace(fast, budget_usd=1e12))
        except NoCandidateError:
            continue
        if a.route.budget.max_cost_per_request is not None or a.eliminated != b.eliminated:
            continue  # both paths checked, or something was dropped: nothing to compare
        if a.route.strategy.name == "balanced":  # two roundings of one formula: order may
            a_ranked = sorted(a.ranked, key=lambda s: s.model.id)  # differ on exact ties
            b_ranked = sorted(b.ranked, key=lambda s: s.model.id)
        else:
            a_ranked, b_ranked = list(a.ranked), list(b.ranked)
        assert [s.model.id for s in a_ranked] == [s.model.id for s in b_ranked]
        for x, y in zip(a_ranked, b_ranked, strict=True):
            assert (x.est_cost_usd, x.worst_cost_usd) == (y.est_cost_usd, y.worst_cost_usd)
            assert math.isclose(x.score, y.score, rel_tol=1e-9, abs_tol=1e-12)


@st.composite
def priced_scenarios(draw: Any) -> tuple[dict[str, Any], dict[str, Any], list[Features]]:
    """All models priced and able to take any request here: the no-drop fast path."""
    prices = st.sampled_from([0.1, 1.0, 3.0, 15.0])
    models = {
        f"up/m{i}": {
            "capabilities": ["chat"],
            "context_window": 100000,
            "quality": draw(st.sampled_from([0.2, 0.5, 0.8, 0.9])),
            "latency_ms": draw(st.sampled_from([10, 100, 1000])),
            "input_price": draw(prices),
            "output_price": draw(prices),
        }
        for i in range(draw(st.integers(1, 7)))
    }
    registry = {
        "providers": {
            "up": {"protocol": "openai", "base_url": "http://127.0.0.1:9", "api_key": "k"}
        },
        "models": models,
    }
    route: dict[str, Any] = {
        "strategy": draw(st.sampled_from(["balanced", "cost_optimized", "quality_optimized"]))
    }
    if route["strategy"] == "balanced" and draw(st.booleans()):
        route["weights"] = {k: draw(st.sampled_from([0.0, 0.5, 2.0])) for k in WEIGHTS}
    requests = [
        Features(input_tokens=n, output_tokens=out)
        for n, out in draw(
            st.lists(
                st.tuples(st.sampled_from([0, 10, 5000]), st.sampled_from([None, 10, 2000])),
                min_size=1,
                max_size=4,
            )
        )
    ]
    return registry, {"main": route}, requests


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(priced_scenarios())
def test_priced_leaves_rank_by_the_documented_formulas(scenario):
    """Fully priced leaves follow the formulas and rank like the checked path."""
    _assert_formulas(scenario)
    _assert_fast_like_checked(scenario)

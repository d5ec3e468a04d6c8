"""`select(plan, policy, features) -> Selection`: the per-request tree walk and ranking.

Pure and allocation-light, because it runs on every request: the tree picks a leaf (rules
were compiled to closures and indexes), then the leaf's statically eligible candidates get
the per-request checks (required capabilities, context window, budget) and the strategy's
per-request order (estimated cost for cost_optimized, normalised blend for balanced, ...).
Live state (breakers, rate limits, measured latency, load) is applied by the runtime
afterwards; dynamic strategies keep their static prior order here.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import itemgetter

from engine.errors import NoCandidateError, UnknownPolicyError
from engine.plan.compiled import Plan
from engine.plan.tree import Candidate, Goto, Leaf, PolicyTree, PricedRow, Rule
from engine.plan.values import Features, RoutePlan, Scored, Selection

_INF = float("inf")

# Scored and Selection are named tuples, built here with tuple.__new__: that skips their
# Python-level __new__ (a third of the cost of each). Nothing else needs to do this.
_tuple = tuple.__new__


def _selection(
    policy: str,
    rule: str | None,
    path: tuple[str, ...],
    route: RoutePlan,
    ranked: tuple[Scored, ...],
    eliminated: tuple[tuple[str, str], ...],
    chain: tuple[Scored, ...],
) -> Selection:
    return _tuple(Selection, (policy, rule, path, route, ranked, eliminated, chain))


def _scored(c: Candidate, score: float, est: float | None, worst: float | None) -> Scored:
    return _tuple(Scored, (c.model, score, est, worst))


def select(plan: Plan, policy: str, features: Features) -> Selection:
    """Route one request: the deciding rule, the path taken, the ranked candidates.

    Raises NoCandidateError when nothing is left and the route has no fallback policy; with
    one, an empty Selection is returned so the caller moves on to that policy.
    """
    # walk's commonest case inlined (no hand-off to another policy): one call fewer.
    tree: PolicyTree | None = plan.policies.get(policy)
    if tree is None:
        raise UnknownPolicyError(f"unknown policy `{policy}`")
    rule, target = tree.decide(features)
    if isinstance(target, Goto):
        step = rule.step if rule is not None else tree.default_step
        leaf, name, path, decided_by = _follow(plan, policy, features, tree, (step,), target)
        return rank(leaf, features, decided_by, name, path)
    if rule is None:
        return rank(target, features, tree.name, None, (tree.default_step,))
    return rank(target, features, tree.name, rule.name, (rule.step,))


def walk(
    plan: Plan, policy: str, features: Features
) -> tuple[Leaf, str | None, tuple[str, ...], str]:
    """Follow the policy's tree (and rule hand-offs to other policies) down to a leaf."""
    policies = plan.policies
    tree: PolicyTree | None = policies.get(policy)
    if tree is None:
        raise UnknownPolicyError(f"unknown policy `{policy}`")
    rule, target = tree.decide(features)
    if rule is None:
        step, name = tree.default_step, None
    else:
        step, name = rule.step, rule.name
    if not isinstance(target, Goto):  # the commonest case: no hand-off
        return target, name, (step,), tree.name
    return _follow(plan, policy, features, tree, (step,), target)


def _follow(
    plan: Plan,
    policy: str,
    features: Features,
    tree: PolicyTree,
    path: tuple[str, ...],
    goto: Goto,
) -> tuple[Leaf, str | None, tuple[str, ...], str]:
    """walk, on from a rule that handed the request to another policy."""
    policies = plan.policies
    target: Leaf | Goto = goto
    rule: Rule | None = None
    for _ in range(len(policies) + 1):  # link forbids cycles; this bound makes it certain
        if not isinstance(target, Goto):
            return target, rule.name if rule else None, path, tree.name
        path += (target.step,)
        nxt = policies.get(target.policy)
        if nxt is None:
            raise UnknownPolicyError(f"unknown policy `{target.policy}` (from `{tree.name}`)")
        tree = nxt
        rule, target = tree.decide(features)
        path += (rule.step if rule is not None else tree.default_step,)
    raise UnknownPolicyError(f"policy references loop from `{policy}`")


def rank(
    leaf: Leaf, features: Features, policy: str, rule: str | None, path: tuple[str, ...]
) -> Selection:
    """Per-request checks and ordering of a leaf's candidates."""
    route = leaf.route
    need_in = features.input_tokens
    out_cap = features.output_tokens
    expected = out_cap or route.default_max_tokens
    required = features.capabilities
    limit = features.budget_usd  # the smaller of the request's and the route's budget
    cap = route.budget.max_cost_per_request
    if cap is not None and (limit is None or cap < limit):
        limit = cap
    need = need_in + out_cap if out_cap else need_in
    if not required and limit is None and need <= leaf.min_context:  # nothing to drop
        priced = leaf.priced
        if priced is not None:  # the commonest case, in one pass
            ranked = _PRICED[leaf.sort](priced, need_in, expected, out_cap, leaf.cost_share)
        else:
            rows = _rows(leaf.candidates, need_in, expected, out_cap)
            ranked = _ALL_ORDERS[leaf.sort](leaf, rows, required)
        if ranked and not leaf.chain:  # nothing more to check: _selection, inlined
            return _tuple(Selection, (policy, rule, path, route, ranked, leaf.eliminated, ()))
        dropped: list[tuple[str, str]] = []
    else:
        dropped = []
        rows = _checked(leaf.candidates, required, need, need_in, expected, out_cap, limit, dropped)
        ranked = _ORDERS[leaf.sort](leaf, rows, required)
    chain: tuple[Scored, ...] = ()
    if leaf.chain:
        args = (required, need, need_in, expected, out_cap, limit, dropped, "fallback chain: ")
        chain = tuple([_scored(c, 0.0, e, w) for e, w, c in _checked(leaf.chain, *args)])
    eliminated = leaf.eliminated + tuple(dropped) if dropped else leaf.eliminated
    if not ranked and not chain and route.fallback_policy is None:
        raise NoCandidateError(_no_candidate_message(policy, eliminated), dict(eliminated))
    return _selection(policy, rule, path, route, ranked, eliminated, chain)


Row = tuple[float | None, float | None, Candidate]  # estimated cost, worst-case cost, candidate


def _rows(
    cands: tuple[Candidate, ...], need_in: int, expected: int, out_cap: int | None
) -> list[Row]:
    """Each candidate with its estimated and worst-case cost for this request's size."""
    # One comprehension (no per-row call or append): this runs for every candidate of
    # every request. The arithmetic is ModelPlan.cost's, so the figures agree to the bit.
    return [
        (None, None, c)
        if (pin := c.input_price) is None or (pout := c.output_price) is None
        else (
            ((base := need_in * pin) + expected * pout) / 1e6,
            (base + (out_cap or c.max_output) * pout) / 1e6,
            c,
        )
        for c in cands
    ]


def _checked(
    cands: tuple[Candidate, ...],
    required: frozenset[str],
    need: int,
    need_in: int,
    expected: int,
    out_cap: int | None,
    limit: float | None,
    dropped: list[tuple[str, str]],
    prefix: str = "",
) -> list[Row]:
    """_rows minus the candidates this request rules out, each recorded with its reason."""
    kept: list[Row] = []
    for row in _rows(cands, need_in, expected, out_cap):
        cand = row[2]
        why = _check(cand, required, need)
        if why is None and limit is not None:
            why = _over_budget(row[1], limit)
        if why is None:
            kept.append(row)
        else:
            dropped.append((cand.model.id, prefix + why))
    return kept


def _check(cand: Candidate, required: frozenset[str], need: int) -> str | None:
    if required and not required <= cand.capabilities:
        return "missing capability: " + ", ".join(sorted(required - cand.capabilities))
    if need > cand.context_window:
        return f"context window {cand.context_window} < {need} tokens needed"
    return None


def _over_budget(worst: float | None, limit: float) -> str | None:
    if worst is None:
        return f"price unknown; a budget of ${limit:g} needs a price"
    if worst > limit:
        return f"worst-case cost ${worst:.6g} > budget ${limit:g}"
    return None


# Orders. Sorting decorated tuples (key, static position, ...) compares in C; the static
# position is unique, so ties never reach the candidate objects and the order is stable.


def _static_order(leaf: Leaf, rows: list[Row], required: frozenset[str]) -> tuple[Scored, ...]:
    return tuple([_tuple(Scored, (c.model, c.static_score, e, w)) for e, w, c in rows])


def _cost_order(leaf: Leaf, rows: list[Row], required: frozenset[str]) -> tuple[Scored, ...]:
    keyed = [(_INF if e is None else e, c.order, e, w, c) for e, w, c in rows]
    keyed.sort()
    return tuple([_tuple(Scored, (c.model, 0.0 - k, e, w)) for k, _, e, w, c in keyed])


def _local_first(leaf: Leaf, rows: list[Row], required: frozenset[str]) -> tuple[Scored, ...]:
    keyed = [(not c.model.local, _INF if e is None else e, c.order, e, w, c) for e, w, c in rows]
    keyed.sort()
    return tuple([_scored(c, 0.0 if remote else 1.0, e, w) for remote, _, _, e, w, c in keyed])


def _capability_match(leaf: Leaf, rows: list[Row], required: frozenset[str]) -> tuple[Scored, ...]:
    """Fewest capabilities beyond the required ones first (no paying for unused features)."""
    keyed = [
        (len(c.capabilities - required), _INF if e is None else e, c.order, e, w, c)
        for e, w, c in rows
    ]
    keyed.sort()
    return tuple([_scored(c, -float(extra), e, w) for extra, _, _, e, w, c in keyed])


def _balanced(leaf: Leaf, rows: list[Row], required: frozenset[str]) -> tuple[Scored, ...]:
    """Weighted blend of normalised cheapness, quality and speed; 1.0 is best on all three."""
    if not rows:
        return ()
    wc, wq, wl = leaf.weights
    total = (wc + wq + wl) or 1.0
    max_cost = max((e for e, _, _ in rows if e is not None), default=0.0) or 1.0
    max_lat = max(c.model.latency_ms for _, _, c in rows) or 1.0
    keyed = []
    for e, w, c in rows:
        cheap = 0.0 if e is None else 1.0 - e / max_cost
        fast = 1.0 - c.model.latency_ms / max_lat
        score = (wc * cheap + wq * c.model.quality + wl * fast) / total
        keyed.append((-score, c.order, e, w, c))
    keyed.sort()
    return tuple([_tuple(Scored, (c.model, 0.0 - k, e, w)) for k, _, e, w, c in keyed])


def _balanced_all(leaf: Leaf, rows: list[Row], required: frozenset[str]) -> tuple[Scored, ...]:
    """_balanced when no candidate was dropped: quality and latency parts precompiled."""
    if not rows:
        return ()
    wc = leaf.weights[0] / (sum(leaf.weights) or 1.0)
    max_cost = max([e for e, _, _ in rows if e is not None], default=0.0) or 1.0
    keyed = [
        (
            -(c.balance_part + (0.0 if e is None else wc * (1.0 - e / max_cost))),
            c.order,
            e,
            w,
            c,
        )
        for e, w, c in rows
    ]
    keyed.sort()
    return tuple([_tuple(Scored, (c.model, 0.0 - k, e, w)) for k, _, e, w, c in keyed])


Order = Callable[[Leaf, list[Row], frozenset[str]], tuple[Scored, ...]]
_ORDERS: dict[str, Order] = {
    "static": _static_order,
    "cost": _cost_order,
    "local_first": _local_first,
    "capability_match": _capability_match,
    "balanced": _balanced,
}
_ALL_ORDERS: dict[str, Order] = {**_ORDERS, "balanced": _balanced_all}  # nothing dropped


# Leaves whose candidates are all priced, when nothing was dropped: each Scored is built
# straight from Leaf.priced, and sorted in place. The figures are ModelPlan.cost's (the
# output products precompiled are the same floats it would compute), and the
# orders those of _static_order, _cost_order and _balanced_all: sort is stable, so ties keep
# the static order, as the decorated tuples' position did.

_ESTIMATE = itemgetter(2)
_SCORE = itemgetter(1)


def _static_priced(
    rows: tuple[PricedRow, ...], need_in: int, expected: int, out_cap: int | None, wc: float
) -> tuple[Scored, ...]:
    # Plain loops, not comprehensions: for the few rows a leaf has, a comprehension's own
    # function call costs more than the loop it saves (Python 3.11).
    new, cls = _tuple, Scored
    out = []
    if out_cap:  # then expected == out_cap: the worst case is the estimate
        for m, pin, pout, _, _, part in rows:
            est = (need_in * pin + out_cap * pout) / 1e6
            out.append(new(cls, (m, part, est, est)))
    else:
        for m, pin, _, exp_out, max_out, part in rows:
            base = need_in * pin
            out.append(new(cls, (m, part, (base + exp_out) / 1e6, (base + max_out) / 1e6)))
    return tuple(out)


def _cost_priced(
    rows: tuple[PricedRow, ...], need_in: int, expected: int, out_cap: int | None, wc: float
) -> tuple[Scored, ...]:
    new, cls = _tuple, Scored  # loops, as in _static_priced
    scored = []
    if out_cap:
        for m, pin, pout, _, _, _ in rows:
            est = (need_in * pin + out_cap * pout) / 1e6
            scored.append(new(cls, (m, 0.0 - est, est, est)))
    else:
        for m, pin, _, exp_out, max_out, _ in rows:
            base = need_in * pin
            est = (base + exp_out) / 1e6
            scored.append(new(cls, (m, 0.0 - est, est, (base + max_out) / 1e6)))
    scored.sort(key=_ESTIMATE)
    return tuple(scored)


def _balanced_priced(
    rows: tuple[PricedRow, ...], need_in: int, expected: int, out_cap: int | None, wc: float
) -> tuple[Scored, ...]:
    if not rows:
        return ()
    new, cls = _tuple, Scored  # as in _static_priced
    if out_cap:
        ests = [(need_in * pin + out_cap * pout) / 1e6 for _, pin, pout, _, _, _ in rows]
        per_usd = wc / (max(ests) or 1.0)  # score = best - wc * est / max_cost: Leaf.priced
        scored = [
            new(cls, (m, best - est * per_usd, est, est))
            for (m, _, _, _, _, best), est in zip(rows, ests, strict=False)  # same length
        ]
    else:
        ests = [(need_in * pin + exp_out) / 1e6 for _, pin, _, exp_out, _, _ in rows]
        per_usd = wc / (max(ests) or 1.0)
        scored = [
            new(cls, (m, best - est * per_usd, est, (need_in * pin + max_out) / 1e6))
            for (m, pin, _, _, max_out, best), est in zip(rows, ests, strict=False)
        ]
    scored.sort(key=_SCORE, reverse=True)  # stable: equal scores keep the static order
    return tuple(scored)


PricedOrder = Callable[[tuple[PricedRow, ...], int, int, "int | None", float], tuple[Scored, ...]]
_PRICED: dict[str, PricedOrder] = {
    "static": _static_priced,
    "cost": _cost_priced,
    "balanced": _balanced_priced,
}


def _no_candidate_message(policy: str, eliminated: tuple[tuple[str, str], ...]) -> str:
    if not eliminated:
        return f"policy `{policy}` has no candidate"
    reasons = "; ".join(f"{m}: {why}" for m, why in eliminated[:8])
    more = f" (+{len(eliminated) - 8} more)" if len(eliminated) > 8 else ""
    return f"no candidate for policy `{policy}`: {reasons}{more}"

"""`select(plan, policy, features) -> Selection`: the per-request tree walk and ranking.

Pure and allocation-light, because it runs on every request: the tree picks a leaf (rules
were compiled to closures and indexes), then the leaf's statically eligible candidates get
the per-request checks (required capabilities, context window, budget) and the strategy's
per-request order (estimated cost for cost_optimized, normalised blend for balanced, ...).
Live state (breakers, rate limits, measured latency, load) is applied by the runtime
afterwards; dynamic strategies keep their static prior order here.
"""

from __future__ import annotations

from engine.errors import NoCandidateError, UnknownPolicyError, UnservableRequestError
from engine.frozen import builder
from engine.plan.compiled import Plan
from engine.plan.strategies import REGISTRY, Row
from engine.plan.strategies.base import scored
from engine.plan.tree import Candidate, Goto, Leaf, PolicyTree, Rule
from engine.plan.values import Features, Scored, Selection, cost

_selection = builder(Selection)  # one per request, built by name


def select(plan: Plan, policy: str, features: Features) -> Selection:
    """Route one request: the deciding rule, the path taken, the ranked candidates.

    Raises NoCandidateError when nothing is left and the route has no fallback policy; with
    one, an empty Selection is returned so the caller moves on to that policy.
    """
    leaf, rule, path, decided_by = walk(plan, policy, features)
    return rank(leaf, features, decided_by, rule, path)


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
    """Per-request checks and the strategy's per-request order of a leaf's candidates."""
    route = leaf.route
    strategy = REGISTRY[route.strategy.name]
    need_in = features.input_tokens
    out_cap = features.output_tokens
    expected = out_cap or route.default_max_tokens
    required = features.capabilities
    limit = features.budget_usd  # the smaller of the request's and the route's budget
    cap = route.budget.max_cost_per_request
    if cap is not None and (limit is None or cap < limit):
        limit = cap
    need = need_in + out_cap if out_cap else need_in
    dropped: list[tuple[str, str]] = []
    if not required and limit is None and need <= leaf.min_context:  # nothing to drop
        if leaf.priced is not None:  # the strategy's fast path
            ranked = strategy.rank_priced(leaf.priced, need_in, expected, out_cap, leaf.cost_share)
        else:
            rows = _rows(leaf.candidates, need_in, expected, out_cap)
            ranked = strategy.rank(leaf, rows, required, True)
    else:
        rows = _checked(leaf.candidates, required, need, need_in, expected, out_cap, limit, dropped)
        ranked = strategy.rank(leaf, rows, required, False)
    chain: tuple[Scored, ...] = ()
    if leaf.chain:
        args = (required, need, need_in, expected, out_cap, limit, dropped, "fallback chain: ")
        chain = tuple(
            [scored(model=c.model, score=0.0, est_cost_usd=e, worst_cost_usd=w)
             for e, w, c in _checked(leaf.chain, *args)]
        )  # fmt: skip
    eliminated = leaf.eliminated + tuple(dropped) if dropped else leaf.eliminated
    if not ranked and not chain and route.fallback_policy is None:
        error = UnservableRequestError if _unservable(dropped) else NoCandidateError
        raise error(_no_candidate_message(policy, eliminated), dict(eliminated))
    return _selection(
        policy=policy,
        rule=rule,
        path=path,
        route=route,
        ranked=ranked,
        eliminated=eliminated,
        chain=chain,
    )


def _rows(
    cands: tuple[Candidate, ...], need_in: int, expected: int, out_cap: int | None
) -> list[Row]:
    """Each candidate with its estimated and worst-case cost for this request's size."""
    return [
        (None, None, c)
        if (pin := c.input_price) is None or (pout := c.output_price) is None
        else (
            cost(pin, pout, need_in, expected),
            cost(pin, pout, need_in, out_cap or c.max_output),
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


_MISSING, _WINDOW = "missing capability: ", "context window "


def _check(cand: Candidate, required: frozenset[str], need: int) -> str | None:
    if required and not required <= cand.capabilities:
        return _MISSING + ", ".join(sorted(required - cand.capabilities))
    if need > cand.context_window:
        return f"{_WINDOW}{cand.context_window} < {need} tokens needed"
    return None


def _unservable(dropped: list[tuple[str, str]]) -> bool:
    """Every candidate this request ruled out lacked a capability it needs or a window
    for its tokens: no retry or budget can help (a 400, not a 503). The candidates the
    route left out statically (filters, disabled providers) are not this request's doing."""
    return bool(dropped) and all(
        why.removeprefix("fallback chain: ").startswith((_MISSING, _WINDOW)) for _, why in dropped
    )


def _over_budget(worst: float | None, limit: float) -> str | None:
    if worst is None:
        return f"price unknown; a budget of ${limit:g} needs a price"
    if worst > limit:
        return f"worst-case cost ${worst:.6g} > budget ${limit:g}"
    return None


def _no_candidate_message(policy: str, eliminated: tuple[tuple[str, str], ...]) -> str:
    if not eliminated:
        return f"policy `{policy}` has no candidate"
    reasons = "; ".join(f"{m}: {why}" for m, why in eliminated[:8])
    more = f" (+{len(eliminated) - 8} more)" if len(eliminated) > 8 else ""
    return f"no candidate for policy `{policy}`: {reasons}{more}"

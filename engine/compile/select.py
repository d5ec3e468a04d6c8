"""`select(plan, policy, features) -> Selection`: the per-request tree walk and ranking.

Pure and allocation-light, because it runs on every request: the tree picks a leaf (rules
were compiled to closures and dict dispatch), then the leaf's statically eligible
candidates get the per-request checks (required capabilities, context window, budget) and
the strategy's per-request order (estimated cost for cost_optimized, normalised blend for
balanced, ...). Live state (breakers, rate limits, measured latency, load) is applied by the
runtime afterwards; dynamic strategies keep their static prior order here.
"""

from __future__ import annotations

from engine.compile.plan import Features, Plan, Scored, Selection
from engine.compile.tree import Candidate, Goto, Leaf, PolicyTree
from engine.errors import NoCandidateError, UnknownPolicyError

_INF = float("inf")


def select(plan: Plan, policy: str, features: Features) -> Selection:
    """Route one request: the deciding rule, the path taken, the ranked candidates."""
    leaf, rule, path, name = walk(plan, policy, features)
    return rank(leaf, features, name, rule, path)


def walk(
    plan: Plan, policy: str, features: Features
) -> tuple[Leaf, str | None, tuple[str, ...], str]:
    """Follow the policy's tree (and rule hand-offs to other policies) down to a leaf."""
    policies = plan.policies
    tree: PolicyTree | None = policies.get(policy)
    if tree is None:
        raise UnknownPolicyError(f"unknown policy `{policy}`")
    path: tuple[str, ...] = ()
    for _ in range(len(policies) + 1):  # link forbids cycles; this bound makes it certain
        rule, target = tree.decide(features)
        if rule is None:
            path += (f"{tree.name}: no rule matched, default route",)
        else:
            path += (f"{tree.name}: rule `{rule.name}` matched ({rule.description})",)
        if not isinstance(target, Goto):
            return target, rule.name if rule else None, path, tree.name
        path += (f"-> policy `{target.policy}`",)
        nxt = policies.get(target.policy)
        if nxt is None:
            raise UnknownPolicyError(f"unknown policy `{target.policy}` (from `{tree.name}`)")
        tree = nxt
    raise UnknownPolicyError(f"policy references loop from `{policy}`")


def rank(
    leaf: Leaf, features: Features, policy: str, rule: str | None, path: tuple[str, ...]
) -> Selection:
    """Per-request checks and ordering of a leaf's candidates."""
    route = leaf.route
    need_in = features.input_tokens
    out_cap = features.output_tokens
    expected_out = out_cap or route.default_max_tokens
    need = need_in + (out_cap or 0)
    required = features.capabilities
    limit = _limit(features.budget_usd, route.budget.max_cost_per_request)
    kept: list[tuple[Candidate, float | None, float | None]] = []
    dropped: list[tuple[str, str]] = []
    for cand in leaf.candidates:
        why = _check(cand, required, need)
        model = cand.model
        est = model.cost(need_in, expected_out)
        worst = model.cost(need_in, out_cap or model.max_output)
        if why is None and limit is not None:
            why = _over_budget(worst, limit)
        if why is None:
            kept.append((cand, est, worst))
        else:
            dropped.append((model.id, why))
    ranked = _order(leaf, kept, required)
    chain = _chain(leaf, required, need, need_in, expected_out, out_cap, limit, dropped)
    eliminated = leaf.eliminated + tuple(dropped) if dropped else leaf.eliminated
    if not ranked and not chain:
        raise NoCandidateError(_no_candidate_message(policy, eliminated), dict(eliminated))
    return Selection(policy, rule, path, route, ranked, eliminated, chain)


def _check(cand: Candidate, required: frozenset[str], need: int) -> str | None:
    if required and not required <= cand.capabilities:
        return "missing capability: " + ", ".join(sorted(required - cand.capabilities))
    if need > cand.context_window:
        return f"context window {cand.context_window} < {need} tokens needed"
    return None


def _limit(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else min(a, b)


def _over_budget(worst: float | None, limit: float) -> str | None:
    if worst is None:
        return f"price unknown; a budget of ${limit:g} needs a price"
    if worst > limit:
        return f"worst-case cost ${worst:.6g} > budget ${limit:g}"
    return None


def _order(
    leaf: Leaf, kept: list[tuple[Candidate, float | None, float | None]], required: frozenset[str]
) -> tuple[Scored, ...]:
    sort = leaf.sort
    if sort == "static":
        return tuple(Scored(c.model, c.static_score, e, w) for c, e, w in kept)
    if sort == "cost":
        kept.sort(key=_by_cost)
        return tuple(Scored(c.model, 0.0 - e if e is not None else -_INF, e, w) for c, e, w in kept)
    if sort == "local_first":
        kept.sort(key=lambda k: (not k[0].model.local, _by_cost(k)))
        return tuple(Scored(c.model, 1.0 if c.model.local else 0.0, e, w) for c, e, w in kept)
    if sort == "capability_match":
        scored = [(-float(len(c.capabilities - required)), c, e, w) for c, e, w in kept]
        scored.sort(key=lambda s: (-s[0], _cost_key(s[2]), s[1].order))
        return tuple(Scored(c.model, s, e, w) for s, c, e, w in scored)
    return _balanced(leaf, kept)


def _by_cost(k: tuple[Candidate, float | None, float | None]) -> tuple[float, int]:
    return (_cost_key(k[1]), k[0].order)


def _cost_key(est: float | None) -> float:
    return _INF if est is None else est


def _balanced(
    leaf: Leaf, kept: list[tuple[Candidate, float | None, float | None]]
) -> tuple[Scored, ...]:
    """Weighted blend of normalised cheapness, quality and speed; 1.0 is best on all three."""
    if not kept:
        return ()
    wc, wq, wl = leaf.weights
    total = (wc + wq + wl) or 1.0
    max_cost = max((e for _, e, _ in kept if e is not None), default=0.0) or 1.0
    max_lat = max(c.model.latency_ms for c, _, _ in kept) or 1.0
    scored = []
    for c, e, w in kept:
        cheap = 0.0 if e is None else 1.0 - e / max_cost
        fast = 1.0 - c.model.latency_ms / max_lat
        score = (wc * cheap + wq * c.model.quality + wl * fast) / total
        scored.append((score, c, e, w))
    scored.sort(key=lambda s: (-s[0], s[1].order))
    return tuple(Scored(c.model, round(s, 6), e, w) for s, c, e, w in scored)


def _chain(
    leaf: Leaf,
    required: frozenset[str],
    need: int,
    need_in: int,
    expected_out: int,
    out_cap: int | None,
    limit: float | None,
    dropped: list[tuple[str, str]],
) -> tuple[Scored, ...]:
    if not leaf.chain:
        return ()
    out: list[Scored] = []
    for cand in leaf.chain:
        model = cand.model
        worst = model.cost(need_in, out_cap or model.max_output)
        why = _check(cand, required, need) or (
            _over_budget(worst, limit) if limit is not None else None
        )
        if why is None:
            out.append(Scored(model, 0.0, model.cost(need_in, expected_out), worst))
        else:
            dropped.append((model.id, f"fallback chain: {why}"))
    return tuple(out)


def _no_candidate_message(policy: str, eliminated: tuple[tuple[str, str], ...]) -> str:
    if not eliminated:
        return f"policy `{policy}` has no candidate"
    reasons = "; ".join(f"{m}: {why}" for m, why in eliminated[:8])
    more = f" (+{len(eliminated) - 8} more)" if len(eliminated) > 8 else ""
    return f"no candidate for policy `{policy}`: {reasons}{more}"

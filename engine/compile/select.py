"""`select(plan, policy, features) -> Selection`: the per-request tree walk and ranking.

Pure and allocation-light, because it runs on every request: the tree picks a leaf (rules
were compiled to closures and indexes), then the leaf's statically eligible candidates get
the per-request checks (required capabilities, context window, budget) and the strategy's
per-request order (estimated cost for cost_optimized, normalised blend for balanced, ...).
Live state (breakers, rate limits, measured latency, load) is applied by the runtime
afterwards; dynamic strategies keep their static prior order here.
"""

from __future__ import annotations

from typing import Any

from engine.compile.plan import Features, Plan, Scored, Selection
from engine.compile.tree import Candidate, Goto, Leaf, PolicyTree
from engine.errors import NoCandidateError, UnknownPolicyError

_INF = float("inf")
Kept = tuple[Candidate, float | None, float | None]  # candidate, est. cost, worst-case cost

# Scored and Selection are frozen slotted dataclasses, whose __init__ pays
# object.__setattr__ per field. select builds several per request, so it fills the slots
# directly: the same objects at about half the cost. Nothing else may do this.
_new = object.__new__
_set_model, _set_score, _set_est, _set_worst = (
    vars(Scored)[name].__set__ for name in ("model", "score", "est_cost_usd", "worst_cost_usd")
)


_SELECTION_SLOTS = tuple(
    vars(Selection)[name].__set__
    for name in ("policy", "rule", "path", "route", "ranked", "eliminated", "chain")
)


def _selection(*values: Any) -> Selection:
    s: Any = _new(Selection)
    for setter, value in zip(_SELECTION_SLOTS, values, strict=True):
        setter(s, value)
    return s  # type: ignore[no-any-return]


def _scored(c: Candidate, score: float, est: float | None, worst: float | None) -> Scored:
    s: Any = _new(Scored)
    _set_model(s, c.model)
    _set_score(s, score)
    _set_est(s, est)
    _set_worst(s, worst)
    return s  # type: ignore[no-any-return]


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
        path += (rule.step if rule is not None else tree.default_step,)
        if not isinstance(target, Goto):
            return target, rule.name if rule else None, path, tree.name
        path += (target.step,)
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
    expected = out_cap or route.default_max_tokens
    need = need_in + (out_cap or 0)
    required = features.capabilities
    limit = _limit(features.budget_usd, route.budget.max_cost_per_request)
    dropped: list[tuple[str, str]] = []
    fast = not required and limit is None and need <= leaf.min_context  # nothing to drop
    if fast and leaf.sort == "static":
        ranked = _static(leaf.candidates, need_in, expected, out_cap)
    else:
        kept = (
            [_costed(c, need_in, expected, out_cap) for c in leaf.candidates]
            if fast
            else _checked(
                leaf.candidates, required, need, need_in, expected, out_cap, limit, dropped
            )
        )
        ranked = _order(leaf, kept, required)
    chain: tuple[Scored, ...] = ()
    if leaf.chain:
        found = _checked(
            leaf.chain,
            required,
            need,
            need_in,
            expected,
            out_cap,
            limit,
            dropped,
            "fallback chain: ",
        )
        chain = tuple(_scored(c, 0.0, e, w) for c, e, w in found)
    eliminated = leaf.eliminated + tuple(dropped) if dropped else leaf.eliminated
    if not ranked and not chain:
        raise NoCandidateError(_no_candidate_message(policy, eliminated), dict(eliminated))
    return _selection(policy, rule, path, route, ranked, eliminated, chain)


def _static(
    cands: tuple[Candidate, ...], need_in: int, expected: int, out_cap: int | None
) -> tuple[Scored, ...]:
    """The common case in one loop: static order, nothing dropped, costs filled in."""
    out = []
    for c in cands:
        s: Any = _new(Scored)
        _set_model(s, c.model)
        _set_score(s, c.static_score)
        pin, pout = c.input_price, c.output_price
        if pin is None or pout is None:
            _set_est(s, None)
            _set_worst(s, None)
        else:
            base = need_in * pin
            _set_est(s, (base + expected * pout) / 1e6)
            _set_worst(s, (base + (out_cap or c.max_output) * pout) / 1e6)
        out.append(s)
    return tuple(out)


def _costed(c: Candidate, need_in: int, expected: int, out_cap: int | None) -> Kept:
    pin, pout = c.input_price, c.output_price
    if pin is None or pout is None:
        return (c, None, None)
    base = need_in * pin
    return (c, (base + expected * pout) / 1e6, (base + (out_cap or c.max_output) * pout) / 1e6)


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
) -> list[Kept]:
    kept: list[Kept] = []
    for cand in cands:
        item = _costed(cand, need_in, expected, out_cap)
        why = _check(cand, required, need)
        if why is None and limit is not None:
            why = _over_budget(item[2], limit)
        if why is None:
            kept.append(item)
        else:
            dropped.append((cand.model.id, prefix + why))
    return kept


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


def _order(leaf: Leaf, kept: list[Kept], required: frozenset[str]) -> tuple[Scored, ...]:
    sort = leaf.sort
    if sort == "static":
        return tuple([_scored(c, c.static_score, e, w) for c, e, w in kept])
    if sort == "cost":
        kept.sort(key=_by_cost)
        return tuple([_scored(c, -_INF if e is None else 0.0 - e, e, w) for c, e, w in kept])
    if sort == "local_first":
        kept.sort(key=lambda k: (not k[0].model.local, _by_cost(k)))
        return tuple([_scored(c, 1.0 if c.model.local else 0.0, e, w) for c, e, w in kept])
    if sort == "capability_match":
        scored = [(-float(len(c.capabilities - required)), c, e, w) for c, e, w in kept]
        scored.sort(key=lambda s: (-s[0], _cost_key(s[2]), s[1].order))
        return tuple([_scored(c, s, e, w) for s, c, e, w in scored])
    return _balanced(leaf, kept)


def _by_cost(k: Kept) -> tuple[float, int]:
    return (_cost_key(k[1]), k[0].order)


def _cost_key(est: float | None) -> float:
    return _INF if est is None else est


def _balanced(leaf: Leaf, kept: list[Kept]) -> tuple[Scored, ...]:
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
    return tuple([_scored(c, round(s, 6), e, w) for s, c, e, w in scored])


def _no_candidate_message(policy: str, eliminated: tuple[tuple[str, str], ...]) -> str:
    if not eliminated:
        return f"policy `{policy}` has no candidate"
    reasons = "; ".join(f"{m}: {why}" for m, why in eliminated[:8])
    more = f" (+{len(eliminated) - 8} more)" if len(eliminated) > 8 else ""
    return f"no candidate for policy `{policy}`: {reasons}{more}"

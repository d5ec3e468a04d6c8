"""`explain(plan, policy, request) -> dict` and `render_explain(dict) -> str`.

What a person debugging a policy wants to see, without calling any provider: the request's
features, the path through the tree, the ranked candidates with scores and estimated cost,
the explicit fallback chain, and every eliminated candidate with the filter that removed
it. Built only from the plan and the request's features, so no key can appear in it.
"""

from __future__ import annotations

from typing import Any

from engine.errors import NoCandidateError
from engine.messages import Request, parse_request
from engine.plan.compiled import Plan
from engine.plan.features import features_of
from engine.plan.select import rank, walk
from engine.plan.values import Features, Scored


def explain(plan: Plan, policy: str | None, request: Request | dict[str, Any]) -> dict[str, Any]:
    """How `request` would be routed by `policy` (default: the plan's default policy)."""
    req = parse_request(request)
    name = policy or plan.default_policy or ""
    features = features_of(req)
    leaf, rule, path, decided_by = walk(plan, name, features)
    out: dict[str, Any] = {
        "policy": name,
        "features": _features(features),
        "path": list(path),
        "rule": rule,
        "decided_by": decided_by,
    }
    try:
        sel = rank(leaf, features, decided_by, rule, path)
    except NoCandidateError as exc:
        out.update(
            ranked=[], chain=[], eliminated=_eliminated(exc.eliminated.items()), error=str(exc)
        )
    else:
        out.update(
            ranked=[_scored(s, plan) for s in sel.ranked],
            chain=[_scored(s, plan) for s in sel.chain],
            eliminated=_eliminated(sel.eliminated),
            error=None,
        )
    route = leaf.route
    out["route"] = {
        "strategy": route.strategy.name,
        "fallback_policy": route.fallback_policy,
        "max_attempts": route.max_attempts,
        "budget_per_request": route.budget.max_cost_per_request,
        "cache": route.cache.enabled,
    }
    return out


def _features(f: Features) -> dict[str, Any]:
    return {
        "task_type": f.task_type,
        "capabilities": sorted(f.capabilities),
        "input_tokens": f.input_tokens,
        "output_tokens": f.output_tokens,
        "tags": sorted(f.tags),
        "workspace": f.workspace,
        "budget_usd": f.budget_usd,
    }


def _scored(s: Scored, plan: Plan) -> dict[str, Any]:
    provider = plan.providers.get(s.model.provider)
    return {
        "model": s.model.id,
        "provider": s.model.provider,
        "score": s.score,
        "est_cost_usd": s.est_cost_usd,
        "worst_cost_usd": s.worst_cost_usd,
        "quality": s.model.quality,
        "latency_ms": s.model.latency_ms,
        "local": s.model.local,
        "protocol": provider.protocol if provider else None,
    }


def _eliminated(items: Any) -> list[dict[str, str]]:
    return [{"model": m, "reason": why} for m, why in items]


def render_explain(data: dict[str, Any]) -> str:
    """The explain dict as text for a terminal."""
    lines = [f"policy: {data['policy']}"]
    feats = data["features"]
    shown = ", ".join(f"{k}={v}" for k, v in feats.items() if v not in (None, [], 0))
    lines.append(f"features: {shown or '(none)'}")
    lines.append("path:")
    lines += [f"  {step}" for step in data["path"]]
    route = data["route"]
    lines.append(f"strategy: {route['strategy']}  max_attempts: {route['max_attempts']}")
    lines.append("ranked:")
    lines += _rows(data["ranked"]) or ["  (none)"]
    if data["chain"]:
        lines.append("fallback chain:")
        lines += _rows(data["chain"])
    if route["fallback_policy"]:
        lines.append(f"then policy: {route['fallback_policy']}")
    if data["eliminated"]:
        lines.append("eliminated:")
        lines += [f"  {e['model']}: {e['reason']}" for e in data["eliminated"]]
    if data.get("error"):
        lines.append(f"error: {data['error']}")
    return "\n".join(lines)


def _rows(items: list[dict[str, Any]]) -> list[str]:
    rows = []
    for i, s in enumerate(items, 1):
        cost = "unknown" if s["est_cost_usd"] is None else f"${s['est_cost_usd']:.6f}"
        rows.append(f"  {i}. {s['model']:<40} score {s['score']:>9.4g}  est. cost {cost}")
    return rows

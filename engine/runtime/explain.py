"""Engine.explain: the compiled decision (engine.plan.explain) plus the live state behind it.

A `provider/name` pin skips selection, so it is described directly; a policy is explained
by the plan, and each of its ranked candidates gets its breakers, in-flight count and
measured latency.
"""

from __future__ import annotations

from typing import Any

from engine.errors import UnknownPolicyError
from engine.messages import Request
from engine.plan.compiled import Plan
from engine.plan.explain import explain
from engine.runtime.services import Services


def explain_target(plan: Plan, svc: Services, req: Request, target: str | None) -> dict[str, Any]:
    """Why `req` would go where it goes under `target` (a policy or a pinned model)."""
    model = plan.models.get(target or "")
    if model is not None:  # a `provider/name` pin skips selection
        provider = plan.providers[model.provider]
        row = {
            "model": model.id,
            "provider": model.provider,
            "local": model.local,
            "enabled": provider.enabled,
            "disabled_reason": provider.disabled_reason,
        }
        return {"target": model.id, "policy": None, "pinned": True, "ranked": [row], "chain": []}
    if target is None or target not in plan.policies:
        raise UnknownPolicyError(f"explain needs a policy or model id; got {target!r}")
    out: dict[str, Any] = dict(explain(plan, target, req))
    out["live"] = _live(plan, svc, req, target)
    return out


def _live(plan: Plan, svc: Services, req: Request, target: str) -> dict[str, Any]:
    sel = svc.select(plan, target, svc.features(req))
    return {
        "strategy": sel.route.strategy.name,
        "candidates": {
            c.model.id: {
                "breaker": svc.breakers.state(c.model.id),
                "provider_breaker": svc.breakers.state(c.model.provider),
                "in_flight": svc.strategies.inflight(c.model.id),
                "measured_latency_ms": svc.strategies.measured_latency(c.model.id),
            }
            for c in sel.ranked
        },
    }

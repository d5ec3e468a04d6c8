"""Targets: what a call names (a policy, a `provider/name` pin, a bare model name) resolved
into a `Leg` of the candidate walk.

A policy's leg carries select()'s `Selection`; a pin's carries one synthetic `Scored` and a
route with every default (`PIN_ROUTE`'s settings: ordered, no chain, no cache). Unknown
names fail with an error that says what would work.
"""

from __future__ import annotations

from typing import NamedTuple

from engine.errors import UnknownModelError, UnknownPolicyError
from engine.frozen import builder
from engine.plan.compiled import Plan
from engine.plan.values import (
    Features,
    ModelPlan,
    ProviderPlan,
    RoutePlan,
    Scored,
    Selection,
    StrategyPlan,
)
from engine.runtime.services import Selector

#: The route pins and unknown policies run under: every default of the plan types.
PIN_STRATEGY = StrategyPlan(name="ordered")
PIN_ROUTE = RoutePlan(policy="", candidates=(), strategy=PIN_STRATEGY)


class Leg(NamedTuple):
    """A resolved target: a policy's selection, or a pin's single scored model."""

    target: str
    route: RoutePlan
    selection: Selection | None  # None for a pin
    pin: Scored | None  # None for a policy


# One per leg of every call, built by name without a keyword dict (engine/frozen.py).
_leg = builder(Leg)


def check(plan: Plan, target: str | None) -> ProviderPlan | None:
    """Is `target` a policy (None returned) or a pin of a known provider (returned)?
    Anything else raises, so a typo in request.fallbacks fails at once."""
    if not target:
        raise UnknownPolicyError("no policy given and the configuration names no default")
    if target in plan.policies:
        return None
    provider_id, slash, name = target.partition("/")
    if not slash:
        return plan.providers[bare_model(plan, target).provider]
    provider = plan.providers.get(provider_id) if name else None
    if provider is None:
        raise UnknownModelError(f"unknown provider in model pin {target!r}")
    return provider


def bare_model(plan: Plan, name: str) -> ModelPlan:
    """A bare model name ("gpt-4o-mini", as OpenAI clients send it) that names exactly one
    registry model; anything else is an error that says what would work."""
    found = [m for m in plan.models.values() if m.id.partition("/")[2] == name]
    if len(found) == 1:
        return found[0]
    if found:
        ids = ", ".join(sorted(m.id for m in found))
        raise UnknownModelError(f"model {name!r} is ambiguous ({ids}); pin provider/name")
    known = ", ".join(sorted(plan.policies)) or "none"
    raise UnknownPolicyError(f"unknown policy or model {name!r} (policies: {known})")


def resolve(plan: Plan, target: str | None, select: Selector, features: Features) -> Leg:
    """A policy name, a `provider/name` pin or a unique bare model name, as a Leg."""
    provider = check(plan, target)
    assert target is not None  # check() raised otherwise
    if provider is None:
        sel = select(plan, target, features)
        return _leg(target=target, route=sel.route, selection=sel, pin=None)
    if "/" not in target:
        target = bare_model(plan, target).id
    model = plan.models.get(target) or _unknown_model(target, provider)
    route = RoutePlan(policy=target, candidates=(target,), strategy=PIN_STRATEGY)
    return Leg(target=target, route=route, selection=None, pin=_score(model, route, features))


def _score(model: ModelPlan, route: RoutePlan, features: Features) -> Scored:
    """A pinned model's expected and worst-case cost for this request."""
    tin, cap = features.input_tokens, features.output_tokens
    expected = cap or route.default_max_tokens
    worst = cap or model.max_output or expected
    return Scored(
        model=model,
        score=0.0,
        est_cost_usd=model.cost(tin, expected),
        worst_cost_usd=model.cost(tin, worst),
    )


def _unknown_model(pin: str, provider: ProviderPlan) -> ModelPlan:
    """A pinned model the registry does not list: callable, with its cost unknown."""
    _, _, name = pin.partition("/")
    return ModelPlan(
        id=pin,
        provider=provider.id,
        upstream=name,
        capabilities=frozenset(),
        context_window=0,
        max_output=0,
        input_price=None,
        output_price=None,
        quality=0.0,
        latency_ms=0.0,
        local=provider.local,
    )

"""Static eligibility and static order: which models a route may use, decided at compile time.

Every filter a route declares is applied here, once, in a fixed order, and each model it
removes is recorded with the filter's name, so explain can say why a model was never
considered and link can say which filter removed the last candidate. Providers that are
disabled (no key) are removed after the filters with the reason "provider disabled: ...".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from engine.config.specs import FiltersSpec, RouteSpec
from engine.plan.strategies import REGISTRY
from engine.plan.tree import Candidate, candidate
from engine.plan.values import ModelPlan, ProviderPlan
from engine.vocab import StrategyName

Check = Callable[[ModelPlan], str | None]


@dataclass(frozen=True, slots=True)
class Eligibility:
    candidates: tuple[ModelPlan, ...]  # passed every filter, provider enabled
    eliminated: tuple[tuple[str, str], ...]
    last_filter: str | None  # the filter that removed the last one, when none passed
    filtered_out: bool  # True when the filters (not disabled providers) left nothing


def eligible(
    route: RouteSpec,
    models: Mapping[str, ModelPlan],
    providers: Mapping[str, ProviderPlan],
    implicit: frozenset[str] | None = None,
) -> Eligibility:
    """Filter the route's pool: its `candidates`, else every model of an `implicit` provider
    (embedding-only models only when the route's filters ask for `embeddings`: a chat
    route never lands on a model that cannot chat because it happened to be cheapest)."""
    if route.candidates:
        pool = [models[m] for m in route.candidates if m in models]
    else:
        asked = route.filters.capabilities if route.filters else None
        embeddings = bool(asked and "embeddings" in asked)
        pool = sorted(
            (
                m
                for m in models.values()
                if (implicit is None or m.provider in implicit)
                and (embeddings or not _embedding_only(m))
            ),
            key=lambda m: m.id,
        )
    eliminated: list[tuple[str, str]] = []
    last: str | None = None
    for name, check in _checks(route.filters):
        kept = []
        for model in pool:
            why = check(model)
            if why is None:
                kept.append(model)
            else:
                eliminated.append((model.id, f"filters.{name}: {why}"))
        if pool and not kept:
            last = name
        pool = kept
    filtered_out = not pool
    enabled = []
    for model in pool:
        provider = providers[model.provider]
        if provider.enabled:
            enabled.append(model)
        else:
            eliminated.append((model.id, f"provider disabled: {provider.disabled_reason}"))
    return Eligibility(tuple(enabled), tuple(eliminated), last, filtered_out)


def stray_weights(
    route: RouteSpec, models: Mapping[str, ModelPlan], implicit: frozenset[str] | None = None
) -> list[str]:
    """Known models in `candidate_weights` outside the route's pool (its `candidates`, else
    every model of an implicit provider): weights that can never apply. Unknown ids are
    not listed; link reports those."""
    if route.candidates:
        pool = set(route.candidates)
    else:
        pool = {m.id for m in models.values() if implicit is None or m.provider in implicit}
    return [m for m in route.candidate_weights or {} if m in models and m not in pool]


def _embedding_only(model: ModelPlan) -> bool:
    return "embeddings" in model.capabilities and "chat" not in model.capabilities


def _checks(f: FiltersSpec | None) -> list[tuple[str, Check]]:
    if f is None:
        return []
    checks: list[tuple[str, Check]] = []
    if f.exclude_models:
        excluded = frozenset(f.exclude_models)
        checks.append(("exclude_models", lambda m: "excluded" if m.id in excluded else None))
    if f.providers is not None:
        allowed = frozenset(f.providers)
        shown = ", ".join(f.providers)
        checks.append(
            (
                "providers",
                lambda m: None if m.provider in allowed else f"{m.provider} not in [{shown}]",
            )
        )
    if f.exclude_providers:
        denied = frozenset(f.exclude_providers)
        checks.append(
            (
                "exclude_providers",
                lambda m: f"{m.provider} excluded" if m.provider in denied else None,
            )
        )
    if f.local_only:
        checks.append(("local_only", lambda m: None if m.local else "not local"))
    if f.capabilities:
        needed = frozenset(f.capabilities)
        checks.append(("capabilities", lambda m: _lacks(needed, m.capabilities)))
    if f.min_context is not None:
        low = f.min_context
        checks.append(
            (
                "min_context",
                lambda m: None if m.context_window >= low else f"{m.context_window} < {low}",
            )
        )
    if f.max_input_price is not None:
        checks.append(("max_input_price", _price_cap(f.max_input_price, lambda m: m.input_price)))
    if f.max_output_price is not None:
        checks.append(
            ("max_output_price", _price_cap(f.max_output_price, lambda m: m.output_price))
        )
    if f.max_latency_ms is not None:
        cap = f.max_latency_ms
        checks.append(
            (
                "max_latency_ms",
                lambda m: None if m.latency_ms <= cap else f"{m.latency_ms:g} > {cap:g}",
            )
        )
    if f.min_quality is not None:
        floor = f.min_quality
        checks.append(
            ("min_quality", lambda m: None if m.quality >= floor else f"{m.quality:g} < {floor:g}")
        )
    return checks


def _lacks(needed: frozenset[str], has: frozenset[str]) -> str | None:
    missing = needed - has
    return f"lacks {', '.join(sorted(missing))}" if missing else None


def _price_cap(cap: float, price: Callable[[ModelPlan], float | None]) -> Check:
    def check(model: ModelPlan) -> str | None:
        value = price(model)
        if value is None:
            return "price unknown"
        return None if value <= cap else f"{value:g} > {cap:g}"

    return check


def static_order(
    strategy: StrategyName, models: tuple[ModelPlan, ...], weights: Mapping[str, float]
) -> tuple[Candidate, ...]:
    """The strategy's compile-time order and static score (request-dependent ones re-sort)."""
    ranked = REGISTRY[strategy].static_order(models, weights)
    return tuple(candidate(m, score, i) for i, (m, score) in enumerate(ranked))

"""Registry queries over a compiled plan: which models exist, what they cost, which is best.

Pure functions of the plan (and, for "fastest", of measured latency when there is any), so
they answer in microseconds and always agree with what routing will do. Prices are USD
per million tokens, as in models.yaml; a model whose price is unknown never counts as
cheap.
"""

from __future__ import annotations

from collections.abc import Callable

from engine.errors import UnknownModelError
from engine.plan.compiled import Plan
from engine.plan.values import ModelPlan

#: The call size used to compare prices: 1000 tokens in, 1000 out.
REFERENCE_TOKENS = 1000


def list_models(plan: Plan, provider: str | None = None) -> list[str]:
    """Model ids, sorted, optionally only one provider's."""
    return sorted(m.id for m in plan.models.values() if provider is None or m.provider == provider)


def model_config(plan: Plan, model_id: str) -> ModelPlan:
    """One model's resolved configuration (every default filled in)."""
    model = plan.models.get(model_id)
    if model is None:
        raise UnknownModelError(f"unknown model {model_id!r}")
    return model


def reference_cost(model: ModelPlan) -> float | None:
    """USD for a reference call of 1000 tokens in and 1000 out; None when unknown."""
    return model.cost(REFERENCE_TOKENS, REFERENCE_TOKENS)


def find_models(
    plan: Plan,
    capability: str | None = None,
    max_input_price: float | None = None,
    max_output_price: float | None = None,
) -> list[ModelPlan]:
    """Enabled models with a capability, under the given prices, cheapest first."""
    out = []
    for m in plan.models.values():
        provider = plan.providers.get(m.provider)
        if provider is None or not provider.enabled:
            continue
        if capability is not None and capability not in m.capabilities:
            continue
        if not _under(m.input_price, max_input_price) or not _under(
            m.output_price, max_output_price
        ):
            continue
        out.append(m)
    return sorted(out, key=lambda m: (_cost_key(m), m.id))


def _under(price: float | None, cap: float | None) -> bool:
    return cap is None or (price is not None and price <= cap)


def _cost_key(m: ModelPlan) -> float:
    cost = reference_cost(m)
    return float("inf") if cost is None else cost


def cheapest_model(plan: Plan, capability: str | None = None) -> ModelPlan | None:
    """The model with the lowest reference cost (unknown prices never win)."""
    found = [m for m in find_models(plan, capability) if reference_cost(m) is not None]
    return found[0] if found else None


def fastest_model(
    plan: Plan,
    capability: str | None = None,
    max_input_price: float | None = None,
    max_output_price: float | None = None,
    measured: Callable[[str], float | None] = lambda _id: None,
) -> ModelPlan | None:
    """The model with the lowest latency: measured when known, else the registry's prior."""
    found = find_models(plan, capability, max_input_price, max_output_price)
    if not found:
        return None

    def latency(m: ModelPlan) -> float:
        seen = measured(m.id)
        return m.latency_ms if seen is None else seen

    return min(found, key=lambda m: (latency(m), m.id))

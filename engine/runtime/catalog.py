"""`Catalog`: the Engine's read-only questions about configured providers and models.

Which providers exist and which a call would try now, their keys' rate-limit status, and
the registry's model queries. They need only the plan in force, the live services and the
private loop thread, so they live apart from the calls; `Engine` inherits them.
"""

from __future__ import annotations

from typing import Any

from engine.errors import UnknownModelError
from engine.plan.compiled import Plan
from engine.plan.values import ModelPlan, ProviderPlan
from engine.runtime import health as _health
from engine.runtime import registry
from engine.runtime.loop import LoopThread
from engine.runtime.services import Services


class Catalog:
    """Providers and models of the plan in force, as the Engine answers about them."""

    _plan: Plan
    _svc: Services
    _sync: LoopThread

    def is_available(self, provider: str) -> bool:
        """Would a call to this provider be attempted now (enabled, keys left, breaker shut)?"""
        p = self._provider(provider)
        return _health.passive(p, self._plan, self._svc)["status"] in ("healthy", "degraded")

    def list_providers(self) -> list[str]:
        """Every configured provider id, enabled or not (see `health` for which are usable)."""
        return sorted(self._plan.providers)

    def available_providers(self) -> list[str]:
        """The providers a call would be attempted on right now."""
        return [p for p in self.list_providers() if self.is_available(p)]

    async def arate_limit_status(self, provider: str) -> dict[str, Any]:
        """Remaining / limit per key and how many requests are waiting, for one provider."""
        self._provider(provider)
        return dict(await self._svc.limiter.status(provider))

    def rate_limit_status(self, provider: str) -> dict[str, Any]:
        """The sync form of `arate_limit_status` (on the engine's private loop thread)."""
        self._provider(provider)
        return self._sync.call(self.arate_limit_status(provider))

    def _provider(self, provider: str) -> ProviderPlan:
        p = self._plan.providers.get(provider)
        if p is None:
            raise UnknownModelError(f"unknown provider {provider!r}")
        return p

    # -- registry -------------------------------------------------------------------------

    def list_models(self, provider: str | None = None) -> list[str]:
        """Model ids, sorted; only one provider's when `provider` is given."""
        return registry.list_models(self._plan, provider)

    def model_config(self, model_id: str) -> ModelPlan:
        """One model's resolved configuration; UnknownModelError if there is none."""
        return registry.model_config(self._plan, model_id)

    def find_models(
        self,
        capability: str | None = None,
        max_input_price: float | None = None,
        max_output_price: float | None = None,
    ) -> list[ModelPlan]:
        """Enabled models with `capability` under the prices (USD per 1M), cheapest first."""
        return registry.find_models(self._plan, capability, max_input_price, max_output_price)

    def cheapest_model(self, capability: str | None = None) -> ModelPlan | None:
        """The cheapest enabled model with `capability` (unknown prices never win)."""
        return registry.cheapest_model(self._plan, capability)

    def fastest_model(
        self,
        capability: str | None = None,
        max_input_price: float | None = None,
        max_output_price: float | None = None,
    ) -> ModelPlan | None:
        """The fastest enabled model with `capability`: measured latency, else the prior."""
        return registry.fastest_model(
            self._plan,
            capability,
            max_input_price,
            max_output_price,
            self._svc.strategies.measured_latency,
        )

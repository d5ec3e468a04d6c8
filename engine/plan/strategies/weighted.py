"""`weighted`: a seeded weighted-random order (candidate_weights; 1.0 when unlisted)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from engine.plan.strategies.base import LiveState, Strategy
from engine.plan.values import ModelPlan, Scored, StrategyPlan


class Weighted(Strategy):
    name = "weighted"
    live = True

    def static_order(
        self, models: tuple[ModelPlan, ...], weights: Mapping[str, float]
    ) -> list[tuple[ModelPlan, float]]:
        ranked = sorted(models, key=lambda m: -weights.get(m.id, 1.0))
        return [(m, weights.get(m.id, 1.0)) for m in ranked]

    def live_order(
        self,
        key: str,
        plan: StrategyPlan,
        ranked: Sequence[Scored],
        live: LiveState,
        streaming: bool,
    ) -> list[Scored]:
        """Weighted random order without replacement (Efraimidis-Spirakis keys u**(1/w))."""
        rng = live.rng(key, plan)
        weights = plan.candidate_weights

        def draw(s: Scored) -> float:
            w = weights.get(s.model.id, 1.0)
            return rng.random() ** (1.0 / w) if w > 0 else -1.0

        keyed = [(draw(s), i, s) for i, s in enumerate(ranked)]
        keyed.sort(key=lambda t: (-t[0], t[1]))
        return [s for _, _, s in keyed]

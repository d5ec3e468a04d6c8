"""`quality_optimized`: the highest quality first; equal quality, the cheaper first."""

from __future__ import annotations

from collections.abc import Mapping

from engine.plan.strategies.base import INF, Strategy
from engine.plan.values import ModelPlan


def blended_price(model: ModelPlan) -> float:
    """Input plus output price per 1M tokens; unknown prices sort last."""
    if model.input_price is None or model.output_price is None:
        return INF
    return model.input_price + model.output_price


class QualityOptimized(Strategy):
    name = "quality_optimized"

    def static_order(
        self, models: tuple[ModelPlan, ...], weights: Mapping[str, float]
    ) -> list[tuple[ModelPlan, float]]:
        ranked = sorted(models, key=lambda m: (-m.quality, blended_price(m)))
        return [(m, m.quality) for m in ranked]

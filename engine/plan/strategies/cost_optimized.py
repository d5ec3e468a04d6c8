"""`cost_optimized`: the cheapest for this request first (estimated input + expected output).

Statically by blended price; per request by the estimated cost of this request's size,
unpriced models last, ties in static order.
"""

from __future__ import annotations

from collections.abc import Mapping

from engine.plan.strategies.base import ESTIMATE, INF, Row, Strategy, priced_costs, scored
from engine.plan.strategies.quality_optimized import blended_price
from engine.plan.tree import Leaf, PricedRow
from engine.plan.values import ModelPlan, Scored


class CostOptimized(Strategy):
    name = "cost_optimized"

    def static_order(
        self, models: tuple[ModelPlan, ...], weights: Mapping[str, float]
    ) -> list[tuple[ModelPlan, float]]:
        return [(m, 0.0) for m in sorted(models, key=blended_price)]

    def rank(
        self, leaf: Leaf, rows: list[Row], required: frozenset[str], all_kept: bool
    ) -> tuple[Scored, ...]:
        # Sorting decorated tuples compares in C; the static position is unique, so ties
        # never reach the candidates and the order is stable.
        keyed = [(INF if e is None else e, c.order, e, w, c) for e, w, c in rows]
        keyed.sort()
        return tuple(
            [scored(model=c.model, score=0.0 - k, est_cost_usd=e, worst_cost_usd=w)
             for k, _, e, w, c in keyed]
        )  # fmt: skip

    def rank_priced(
        self, rows: tuple[PricedRow, ...], need_in: int, expected: int, out_cap: int | None,
        cost_share: float,
    ) -> tuple[Scored, ...]:  # fmt: skip
        out = []
        for row in rows:
            m, est, worst, _ = priced_costs(row, need_in, out_cap)
            out.append(scored(model=m, score=0.0 - est, est_cost_usd=est, worst_cost_usd=worst))
        out.sort(key=ESTIMATE)  # stable: equal estimates keep the static order
        return tuple(out)

"""`least_loaded`: the candidate with the fewest calls in flight first."""

from __future__ import annotations

from collections.abc import Sequence

from engine.plan.strategies.base import LiveState, Strategy
from engine.plan.values import Scored, StrategyPlan


class LeastLoaded(Strategy):
    name = "least_loaded"
    live = True

    def live_order(
        self,
        key: str,
        plan: StrategyPlan,
        ranked: Sequence[Scored],
        live: LiveState,
        streaming: bool,
    ) -> list[Scored]:
        return sorted(ranked, key=lambda s: live.inflight(s.model.id))

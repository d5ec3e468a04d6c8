"""`round_robin`: each request starts one further along the static order."""

from __future__ import annotations

from collections.abc import Sequence

from engine.plan.strategies.base import LiveState, Strategy
from engine.plan.values import Scored, StrategyPlan


class RoundRobin(Strategy):
    name = "round_robin"
    live = True

    def live_order(
        self,
        key: str,
        plan: StrategyPlan,
        ranked: Sequence[Scored],
        live: LiveState,
        streaming: bool,
    ) -> list[Scored]:
        i = live.turn(key) % len(ranked)
        return [*ranked[i:], *ranked[:i]]

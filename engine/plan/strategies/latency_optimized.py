"""`latency_optimized`: the fastest first, by measured latency (TTFT when streaming).

Statically by the registry's latency prior; at run time by the moving averages the engine
measures, trying an untried candidate first now and then (EXPLORE_RATE) so it gets measured.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from engine.plan.strategies.base import LiveState, Strategy
from engine.plan.values import ModelPlan, Scored, StrategyPlan

#: Probability that latency_optimized tries an untried candidate first.
EXPLORE_RATE = 0.1


class LatencyOptimized(Strategy):
    name = "latency_optimized"
    live = True

    def static_order(
        self, models: tuple[ModelPlan, ...], weights: Mapping[str, float]
    ) -> list[tuple[ModelPlan, float]]:
        return [(m, -m.latency_ms) for m in sorted(models, key=lambda m: m.latency_ms)]

    def live_order(
        self,
        key: str,
        plan: StrategyPlan,
        ranked: Sequence[Scored],
        live: LiveState,
        streaming: bool,
    ) -> list[Scored]:
        out = sorted(ranked, key=lambda s: live.expected_latency(s, streaming))
        untried = [s for s in out if not live.measured(s.model.id)]
        if untried and live.rng(key, plan).random() < EXPLORE_RATE:
            out.remove(untried[0])
            out.insert(0, untried[0])
        return out

"""Live measurements for the strategies: latency, load, counters and seeded random streams.

The strategies themselves (engine.plan.strategies, one object each) decide orders; for
those with a live order (`DYNAMIC_STRATEGIES`) the final order depends on what happened at
run time, which only the runtime knows: measured latency and time-to-first-token,
in-flight counts, round-robin counters and a seeded random stream for `weighted`. This
object keeps those figures and is the `LiveState` a strategy's `live_order` reads.

Every update here is a plain synchronous method with no `await` inside, so on one event
loop an update can never interleave with another (no get-then-set races across awaits).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from engine.plan.strategies import REGISTRY
from engine.plan.values import Scored, StrategyPlan

#: Weight of a new sample in the moving averages (higher reacts faster).
EWMA_ALPHA = 0.3


@dataclass(slots=True)
class _Latency:
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    samples: int = 0


class StrategyState:
    """Live measurements and counters shared by every request of one engine."""

    def __init__(self, seed: int = 0) -> None:
        self._latency: dict[str, _Latency] = {}
        self._inflight: dict[str, int] = {}
        self._counters: dict[str, int] = {}
        self._rngs: dict[str, random.Random] = {}
        self._seed = seed

    # -- measurements -------------------------------------------------------------------

    def observe_latency(self, model: str, latency_ms: float, ttft_ms: float | None = None) -> None:
        """Fold one successful call's latency (and time to first token) into the averages."""
        m = self._latency.get(model)
        if m is None:
            self._latency[model] = _Latency(latency_ms, ttft_ms, 1)
            return
        m.latency_ms += EWMA_ALPHA * (latency_ms - m.latency_ms)
        if ttft_ms is not None:
            m.ttft_ms = (
                ttft_ms if m.ttft_ms is None else m.ttft_ms + EWMA_ALPHA * (ttft_ms - m.ttft_ms)
            )
        m.samples += 1

    def measured_latency(self, model: str) -> float | None:
        """The moving average of a model's latency, or None when it was never measured."""
        m = self._latency.get(model)
        return None if m is None else m.latency_ms

    def expected_latency(self, scored: Scored, streaming: bool = False) -> float:
        """Measured latency (TTFT when streaming and known), else the registry's prior."""
        m = self._latency.get(scored.model.id)
        if m is None:
            return scored.model.latency_ms
        if streaming and m.ttft_ms is not None:
            return m.ttft_ms
        return m.latency_ms

    def begin(self, model: str) -> None:
        self._inflight[model] = self._inflight.get(model, 0) + 1

    def end(self, model: str) -> None:
        self._inflight[model] = self._inflight.get(model, 1) - 1

    def inflight(self, model: str) -> int:
        return self._inflight.get(model, 0)

    # -- what a strategy's live order reads (engine.plan.strategies.LiveState) -----------

    def measured(self, model: str) -> bool:
        """Whether a call to `model` has been measured yet."""
        return model in self._latency

    def rng(self, key: str, strategy: StrategyPlan) -> random.Random:
        """The seeded random stream of one route (`key`), the same on every run."""
        rng = self._rngs.get(key)
        if rng is None:
            rng = self._rngs[key] = random.Random(f"{self._seed}:{strategy.seed}:{key}")
        return rng

    def turn(self, key: str) -> int:
        """How many times `key` was ordered before (round_robin's counter)."""
        n = self._counters.get(key, 0)
        self._counters[key] = n + 1
        return n

    # -- ordering -----------------------------------------------------------------------

    def order(
        self, key: str, strategy: StrategyPlan, ranked: Sequence[Scored], streaming: bool = False
    ) -> list[Scored]:
        """The candidates in the order to try them: the strategy's live order, if it has one."""
        if len(ranked) < 2:
            return list(ranked)
        return REGISTRY[strategy.name].live_order(key, strategy, ranked, self, streaming)

"""The strategy registry: one object per strategy, one module each (see base.py for the parts).

Adding a strategy: its name in engine/vocab.py, a module here with a `Strategy` subclass,
and one line in `_ALL` below; tests/compile/test_contract_lists.py checks they agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from engine.plan.strategies.balanced import Balanced
from engine.plan.strategies.base import LiveState, Row, Strategy
from engine.plan.strategies.capability_match import CapabilityMatch
from engine.plan.strategies.cost_optimized import CostOptimized
from engine.plan.strategies.latency_optimized import LatencyOptimized
from engine.plan.strategies.least_loaded import LeastLoaded
from engine.plan.strategies.local_first import LocalFirst
from engine.plan.strategies.ordered import Ordered
from engine.plan.strategies.quality_optimized import QualityOptimized
from engine.plan.strategies.round_robin import RoundRobin
from engine.plan.strategies.weighted import Weighted
from engine.vocab import STRATEGIES, StrategyName

__all__ = ["DYNAMIC_STRATEGIES", "REGISTRY", "LiveState", "Row", "Strategy"]

_ALL: tuple[Strategy, ...] = (
    CostOptimized(),
    LatencyOptimized(),
    QualityOptimized(),
    Balanced(),
    RoundRobin(),
    Weighted(),
    LeastLoaded(),
    LocalFirst(),
    CapabilityMatch(),
    Ordered(),
)

#: Every strategy by name, in vocab's order.
REGISTRY: Mapping[StrategyName, Strategy] = MappingProxyType(
    {name: next(s for s in _ALL if s.name == name) for name in STRATEGIES}
)

#: Strategies whose final order depends on live state and is decided by the runtime.
DYNAMIC_STRATEGIES: frozenset[str] = frozenset(s.name for s in _ALL if s.live)

"""What a strategy is: one object with up to four parts, and the defaults they start from.

    static_order   compile time: the order of a route's eligible models, and a static score
    prepare        compile time: per-candidate figures the strategy precomputes (optional)
    rank           per request, pure: order the candidates that passed the request's checks
    rank_priced    per request, the fast path: every candidate priced, nothing dropped
                   (optional: `priced_part` returning None turns it off)
    live_order     run time: reorder from live state (measured latency, load, counters);
                   only strategies with `live = True` are asked

The defaults are the `ordered` strategy's: config order, no re-ranking, no live order.
Costs come from engine.plan.values.cost, the one formula (USD per 1M tokens); the fast
path's figures are that formula's, with the output products precompiled.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from operator import itemgetter
from typing import ClassVar, Protocol

from engine.frozen import builder
from engine.plan.tree import Candidate, Leaf, PricedRow
from engine.plan.values import ModelPlan, Scored, StrategyPlan
from engine.vocab import StrategyName

INF = float("inf")

#: (estimated cost, worst-case cost, candidate) for one request; costs None when unpriced.
Row = tuple[float | None, float | None, Candidate]

# One Scored per candidate of every request, built by name (builder: no kwargs dict).
scored = builder(Scored)


def priced_costs(
    row: PricedRow, need_in: int, out_cap: int | None
) -> tuple[ModelPlan, float, float, float]:
    """(model, estimated, worst-case, precompiled part) of a Leaf.priced row for a request.

    The figures are `cost`'s, computed from the output products the compiler precompiled
    (the same floats), so the fast path and the general path agree to the bit."""
    m, pin, pout, exp_out, max_out, part = row
    base = need_in * pin
    if out_cap:  # then the expected output is the cap: the worst case is the estimate
        est = (base + out_cap * pout) / 1e6
        return m, est, est, part
    return m, (base + exp_out) / 1e6, (base + max_out) / 1e6, part


class LiveState(Protocol):
    """What a live order may read: the runtime's StrategyState provides it."""

    def expected_latency(self, scored: Scored, streaming: bool = False) -> float: ...
    def measured(self, model: str) -> bool: ...
    def inflight(self, model: str) -> int: ...
    def rng(self, key: str, strategy: StrategyPlan) -> random.Random: ...
    def turn(self, key: str) -> int: ...


class Strategy:
    """The `ordered` behaviour; each strategy module overrides the parts it changes."""

    name: ClassVar[StrategyName]
    live: ClassVar[bool] = False  # True: the runtime asks live_order for the final order

    def static_order(
        self, models: tuple[ModelPlan, ...], weights: Mapping[str, float]
    ) -> list[tuple[ModelPlan, float]]:
        """Config order; the static score says so (first is highest)."""
        n = len(models)
        return [(m, float(n - i)) for i, m in enumerate(models)]

    def prepare(
        self, cands: tuple[Candidate, ...], weights: tuple[float, float, float]
    ) -> tuple[Candidate, ...]:
        """Candidates with any figures this strategy precomputes (none by default)."""
        return cands

    def priced_part(self, cand: Candidate, cost_share: float) -> float | None:
        """The last figure of Leaf.priced for `cand`; None: no fast path for this strategy."""
        return cand.static_score

    def rank(
        self, leaf: Leaf, rows: list[Row], required: frozenset[str], all_kept: bool
    ) -> tuple[Scored, ...]:
        """Per request: keep the static order."""
        return tuple(
            [scored(model=c.model, score=c.static_score, est_cost_usd=e, worst_cost_usd=w)
             for e, w, c in rows]
        )  # fmt: skip

    def rank_priced(
        self, rows: tuple[PricedRow, ...], need_in: int, expected: int, out_cap: int | None,
        cost_share: float,
    ) -> tuple[Scored, ...]:  # fmt: skip
        """The fast path (see Leaf.priced): the static order, with this request's costs."""
        out = []
        for row in rows:
            m, est, worst, part = priced_costs(row, need_in, out_cap)
            out.append(scored(model=m, score=part, est_cost_usd=est, worst_cost_usd=worst))
        return tuple(out)

    def live_order(
        self,
        key: str,
        plan: StrategyPlan,
        ranked: Sequence[Scored],
        live: LiveState,
        streaming: bool,
    ) -> list[Scored]:
        """Run time: the order to try; static strategies keep select's."""
        return list(ranked)


ESTIMATE = itemgetter(2)
SCORE = itemgetter(1)

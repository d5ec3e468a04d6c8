"""`local_first`: local models first, then the rest; cheapest first within each group."""

from __future__ import annotations

from engine.plan.strategies.base import INF, Row, Strategy, scored
from engine.plan.tree import Candidate, Leaf
from engine.plan.values import Scored


class LocalFirst(Strategy):
    name = "local_first"

    def priced_part(self, cand: Candidate, cost_share: float) -> float | None:
        return None  # no fast path: the general rank is the only one

    def rank(
        self, leaf: Leaf, rows: list[Row], required: frozenset[str], all_kept: bool
    ) -> tuple[Scored, ...]:
        keyed = [(not c.model.local, INF if e is None else e, c.order, e, w, c) for e, w, c in rows]
        keyed.sort()
        return tuple(
            [scored(model=c.model, score=0.0 if remote else 1.0, est_cost_usd=e, worst_cost_usd=w)
             for remote, _, _, e, w, c in keyed]
        )  # fmt: skip

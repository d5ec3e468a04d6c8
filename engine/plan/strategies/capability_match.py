"""`capability_match`: the fewest capabilities beyond the required ones first (no paying
for unused features); then the cheapest."""

from __future__ import annotations

from engine.plan.strategies.base import INF, Row, Strategy, scored
from engine.plan.tree import Candidate, Leaf
from engine.plan.values import Scored


class CapabilityMatch(Strategy):
    name = "capability_match"

    def priced_part(self, cand: Candidate, cost_share: float) -> float | None:
        return None  # the order depends on the request's required capabilities

    def rank(
        self, leaf: Leaf, rows: list[Row], required: frozenset[str], all_kept: bool
    ) -> tuple[Scored, ...]:
        keyed = [
            (len(c.capabilities - required), INF if e is None else e, c.order, e, w, c)
            for e, w, c in rows
        ]
        keyed.sort()
        return tuple(
            [scored(model=c.model, score=-float(extra), est_cost_usd=e, worst_cost_usd=w)
             for extra, _, _, e, w, c in keyed]
        )  # fmt: skip

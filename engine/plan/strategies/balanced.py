"""`balanced`: a weighted blend of normalised cheapness, quality and speed (1.0: best at all).

score = (wc * cheap + wq * quality + wl * fast) / (wc + wq + wl), with cheap = 1 - cost /
the dearest candidate's cost for this request and fast = 1 - latency / the slowest prior.
The quality and speed part does not depend on the request, so `prepare` computes it once
per candidate (Candidate.balance_part); per request only the cost part is added.
"""

from __future__ import annotations

from dataclasses import replace

from engine.plan.strategies.base import SCORE, Row, Strategy, priced_costs, scored
from engine.plan.tree import Candidate, Leaf, PricedRow
from engine.plan.values import Scored


class Balanced(Strategy):
    name = "balanced"

    def prepare(
        self, cands: tuple[Candidate, ...], weights: tuple[float, float, float]
    ) -> tuple[Candidate, ...]:
        wc, wq, wl = weights
        total = (wc + wq + wl) or 1.0
        max_lat = max((c.model.latency_ms for c in cands), default=0.0) or 1.0
        return tuple(
            replace(
                c,
                balance_part=(wq * c.model.quality + wl * (1.0 - c.model.latency_ms / max_lat))
                / total,
            )
            for c in cands
        )

    def priced_part(self, cand: Candidate, cost_share: float) -> float | None:
        """The best score the candidate can reach: its quality and speed part plus the whole
        cost share; per request the share it misses is subtracted."""
        return cand.balance_part + cost_share

    def rank(
        self, leaf: Leaf, rows: list[Row], required: frozenset[str], all_kept: bool
    ) -> tuple[Scored, ...]:
        if not rows:
            return ()
        if all_kept:  # the prepared parts were normalised over exactly these candidates
            return _from_parts(leaf, rows)
        wc, wq, wl = leaf.weights
        total = (wc + wq + wl) or 1.0
        max_cost = max((e for e, _, _ in rows if e is not None), default=0.0) or 1.0
        max_lat = max(c.model.latency_ms for _, _, c in rows) or 1.0
        keyed = []
        for e, w, c in rows:
            cheap = 0.0 if e is None else 1.0 - e / max_cost
            fast = 1.0 - c.model.latency_ms / max_lat
            score = (wc * cheap + wq * c.model.quality + wl * fast) / total
            keyed.append((-score, c.order, e, w, c))
        keyed.sort()
        return _scored(keyed)

    def rank_priced(
        self, rows: tuple[PricedRow, ...], need_in: int, expected: int, out_cap: int | None,
        cost_share: float,
    ) -> tuple[Scored, ...]:  # fmt: skip
        if not rows:
            return ()
        figures = [priced_costs(row, need_in, out_cap) for row in rows]
        per_usd = cost_share / (max(est for _, est, _, _ in figures) or 1.0)
        out = [
            scored(model=m, score=best - est * per_usd, est_cost_usd=est, worst_cost_usd=worst)
            for m, est, worst, best in figures
        ]
        out.sort(key=SCORE, reverse=True)  # stable: equal scores keep the static order
        return tuple(out)


def _from_parts(leaf: Leaf, rows: list[Row]) -> tuple[Scored, ...]:
    wc = leaf.weights[0] / (sum(leaf.weights) or 1.0)
    max_cost = max([e for e, _, _ in rows if e is not None], default=0.0) or 1.0
    keyed = [
        (-(c.balance_part + (0.0 if e is None else wc * (1.0 - e / max_cost))), c.order, e, w, c)
        for e, w, c in rows
    ]
    keyed.sort()
    return _scored(keyed)


Keyed = list[tuple[float, int, float | None, float | None, Candidate]]


def _scored(keyed: Keyed) -> tuple[Scored, ...]:
    return tuple(
        [scored(model=c.model, score=0.0 - k, est_cost_usd=e, worst_cost_usd=w)
         for k, _, e, w, c in keyed]
    )  # fmt: skip

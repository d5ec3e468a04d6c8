"""`ordered`: the candidates in the order the route lists them; the defaults of Strategy."""

from __future__ import annotations

from engine.plan.strategies.base import Strategy


class Ordered(Strategy):
    name = "ordered"

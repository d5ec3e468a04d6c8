"""The Plan: everything compiled from models.yaml + routes/, as one immutable value.

Apart from the other plan values because it holds the policies' trees (engine.plan.tree),
which are built from those values: values <- tree <- compiled, one way.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from engine.plan.tree import Leaf, PolicyTree
from engine.plan.values import ModelPlan, ProviderPlan, RoutePlan
from engine.plan.wallets import Wallets


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything compiled from models.yaml + routes/. Immutable; swapped whole on reload."""

    models: Mapping[str, ModelPlan]
    providers: Mapping[str, ProviderPlan]
    policies: Mapping[str, PolicyTree]  # name -> the policy's compiled rules and leaves
    default_policy: str | None = None
    source: str = ""  # where it was loaded from, for messages
    wallets: Wallets = field(default_factory=Wallets)  # every workspace's budget

    def routes(self) -> Iterator[RoutePlan]:
        """Every route a request can end on (each leaf's, rules' and defaults'), once each."""
        return routes_of(self.policies)


def routes_of(policies: Mapping[str, PolicyTree]) -> Iterator[RoutePlan]:
    """Every route of these policies' trees (each leaf's, rules' and defaults')."""
    for tree in policies.values():
        for target in (tree.default, *(rule.target for rule in tree.rules)):
            if isinstance(target, Leaf):
                yield target.route

"""The Plan: everything compiled from models.yaml + routes/, as one immutable value.

Apart from the other plan values because it holds the policies' trees (engine.plan.tree),
which are built from those values: values <- tree <- compiled, one way.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from engine.plan.tree import Leaf, PolicyTree
from engine.plan.values import ModelPlan, ProviderPlan, RoutePlan


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything compiled from models.yaml + routes/. Immutable; swapped whole on reload."""

    models: Mapping[str, ModelPlan]
    providers: Mapping[str, ProviderPlan]
    policies: Mapping[str, PolicyTree]  # name -> the policy's compiled rules and leaves
    default_policy: str | None = None
    source: str = ""  # where it was loaded from, for messages

    def routes(self) -> Iterator[RoutePlan]:
        """Every route a request can end on (each leaf's, rules' and defaults'), once each."""
        for tree in self.policies.values():
            for target in (tree.default, *(rule.target for rule in tree.rules)):
                if isinstance(target, Leaf):
                    yield target.route

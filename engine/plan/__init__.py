"""The product of compile time, read by run time: plain frozen values and the pure walk over them.

    values    Plan, ModelPlan, ProviderPlan, RoutePlan, ... (every default resolved)
    tree      a policy's rule indexes and leaves; PolicyTree.decide(features)
    features  features_of(request) -> Features
    select    select(plan, policy, features) -> Selection      pure, microseconds

engine.compile builds these; engine.runtime reads them. This package imports only leaf
modules (errors, messages, frozen, secrets, endpoints, vocab), never config, compile or
runtime: an import-linter contract in pyproject.toml keeps it so.
"""

from engine.plan.compiled import Plan
from engine.plan.features import features_of
from engine.plan.select import select

__all__ = ["Plan", "features_of", "select"]

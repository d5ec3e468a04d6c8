"""The spec's and the plan's strategy lists are kept apart by the import contracts; keep them equal."""

from typing import get_args

from engine.config.specs import Strategy
from engine.plan.values import StrategyName


def test_spec_and_plan_name_the_same_strategies() -> None:
    """A strategy added to the config language must also exist in the compiled plan."""
    assert get_args(Strategy) == get_args(StrategyName)

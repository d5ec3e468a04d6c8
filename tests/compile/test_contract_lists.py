"""The names the config language accepts are the ones the engine implements."""

from typing import get_args

from engine.config.specs import RouteSpec
from engine.plan.strategies import REGISTRY
from engine.vocab import STRATEGIES


def test_every_strategy_the_config_accepts_is_implemented_once() -> None:
    """The spec's strategy field takes vocab's names, and each has exactly one object."""
    accepted = get_args(get_args(RouteSpec.model_fields["strategy"].annotation)[0])
    assert accepted == STRATEGIES
    assert tuple(REGISTRY) == STRATEGIES
    assert all(REGISTRY[name].name == name for name in STRATEGIES)

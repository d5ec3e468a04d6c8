"""engine.frozen.builder: a cheaper constructor that must build exactly what `cls(...)` does."""

from __future__ import annotations

import copy
import dataclasses
import pickle

import pytest

from engine.errors import AttemptRecord
from engine.frozen import builder
from engine.messages import ProviderResponse, RateLimitInfo, Usage
from engine.plan.values import KeyPlan
from engine.result import Response
from engine.state.protocols import Lease


@dataclasses.dataclass(frozen=True, slots=True)
class _Child(Lease):
    extra: int = 7


def test_built_response_equals_constructed_one() -> None:
    """Same type, fields, equality and hash; frozen; copy, pickle and replace still work."""
    build = builder(Response)
    args = ("hi", (), "stop", Usage(1, 2), 0.5, "p", "p/m", 3.0, (), False, "pol", None, "id")
    built, made = build(*args), Response(*args)
    assert type(built) is Response
    assert built == dataclasses.replace(made, created=built.created)
    assert hash(built) == hash(dataclasses.replace(made, created=built.created))
    assert abs(built.created - made.created) <= 1  # the default factory was called
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.content = "changed"  # type: ignore[misc]
    assert copy.copy(built) == built and pickle.loads(pickle.dumps(built)) == built
    assert dataclasses.replace(built, content="x").content == "x"


def test_defaults_keywords_and_factories() -> None:
    """Omitted arguments take the dataclass's defaults; factories give fresh values."""
    build = builder(ProviderResponse)
    a, b = build("x"), build(content="x", finish_reason="length")
    assert a == ProviderResponse("x") and b == ProviderResponse("x", finish_reason="length")
    assert a.usage == Usage() and a.usage is not build("x").usage
    assert builder(RateLimitInfo)(retry_after_s=2.0) == RateLimitInfo(retry_after_s=2.0)
    assert builder(AttemptRecord)("p", "p/m", "ok") == AttemptRecord("p", "p/m", "ok")


def test_subclass_of_a_frozen_dataclass() -> None:
    """A subclass of a dataclass is built the same way: same result, still frozen."""
    key = KeyPlan("p#0", None)
    built = builder(_Child)("p", key, 1, 2)
    assert type(built) is _Child and built == _Child("p", key, 1, 2)
    assert isinstance(built, Lease) and built.extra == 7
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.extra = 8  # type: ignore[misc]


def test_refuses_what_it_cannot_build_faithfully() -> None:
    """__post_init__ or init=False fields would be skipped, so such classes are refused."""

    @dataclasses.dataclass(slots=True)
    class Post:
        a: int

        def __post_init__(self) -> None:
            pass

    @dataclasses.dataclass(slots=True)
    class Hidden:
        a: int
        b: int = dataclasses.field(init=False, default=0)

    @dataclasses.dataclass
    class NoSlots:
        a: int

    for cls in (Post, Hidden, NoSlots):
        with pytest.raises(TypeError):
            builder(cls)

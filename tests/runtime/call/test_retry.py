"""A route's RetryPlan compiled into tenacity objects: what is retried, how long each wait
is, when it stops, and that each plan is compiled once per engine."""

from __future__ import annotations

import random

import pytest

from engine.errors import (
    AuthenticationError,
    ProviderError,
    RateLimitedError,
    UnavailableError,
)
from engine.plan.values import RetryPlan
from engine.runtime.call.retry import RetryPolicies, RetryPolicy
from engine.testing.clock import FakeClock


async def drive(policy: RetryPolicy, failures: list[ProviderError], spent: bool = False) -> int:
    """Run `policy` over a function that raises `failures` in turn, then answers 1; the
    first failure is the bare try's, as the failover loop hands it over."""
    pending = list(failures)
    first: ProviderError | None = pending.pop(0)
    async for attempt in policy.retrying(lambda: spent):
        with attempt:
            if first is not None:
                failed, first = first, None
                raise failed
            if pending:
                raise pending.pop(0)
            return attempt.retry_state.attempt_number
    raise AssertionError("unreachable")


def policy(clock: FakeClock, **plan: object) -> RetryPolicy:
    return RetryPolicy(RetryPlan(**plan), clock.sleep, random.Random(0))  # type: ignore[arg-type]


async def test_backoff_grows_by_the_multiplier_up_to_the_cap() -> None:
    """Without jitter the waits are initial * multiplier**n, never above backoff_max_s."""
    clock = FakeClock()
    p = policy(clock, max_retries=4, backoff_initial_s=0.5, backoff_max_s=1.5, jitter=False)
    assert await drive(p, [UnavailableError("down")] * 4) == 5
    assert clock.slept == [0.5, 1.0, 1.5, 1.5]


async def test_jitter_keeps_each_wait_between_half_and_all_of_the_backoff() -> None:
    """Equal jitter: every wait lies in [base/2, base] and they are not all equal."""
    clock = FakeClock()
    p = policy(clock, max_retries=5, backoff_initial_s=1.0, backoff_max_s=100.0)
    await drive(p, [UnavailableError("down")] * 5)
    bases = [1.0, 2.0, 4.0, 8.0, 16.0]
    assert all(b / 2 <= s <= b for s, b in zip(clock.slept, bases, strict=True))
    assert len({s / b for s, b in zip(clock.slept, bases, strict=True)}) > 1


async def test_retry_after_is_the_wait_when_the_provider_gives_one() -> None:
    """A 429's Retry-After (within the cap) replaces the backoff for that wait."""
    clock = FakeClock()
    p = policy(clock, max_retries=2, jitter=False, backoff_initial_s=0.5)
    await drive(p, [RateLimitedError("slow down", retry_after=7.0), UnavailableError("x")])
    assert clock.slept == [7.0, 1.0]


async def test_retry_after_above_the_cap_is_not_retried() -> None:
    """A provider asking for a longer pause than max_retry_after_s is failed over from."""
    clock = FakeClock()
    p = policy(clock, max_retry_after_s=30.0)
    long_pause = RateLimitedError("come back tomorrow", retry_after=31.0)
    assert not p.retries(long_pause)
    with pytest.raises(RateLimitedError):
        await drive(p, [UnavailableError("x"), long_pause])
    assert len(clock.slept) == 1


async def test_only_retryable_kinds_in_retry_on_are_retried() -> None:
    """A non-retryable error, or a kind left out of retry_on, ends the tries at once."""
    clock = FakeClock()
    p = policy(clock, retry_on=frozenset({"timeout"}))
    assert not p.retries(UnavailableError("down"))
    assert not p.retries(AuthenticationError("bad key"))
    assert not policy(clock, max_retries=0).retries(UnavailableError("down"))
    with pytest.raises(UnavailableError):
        await drive(p, [UnavailableError("down")])
    assert clock.slept == []


async def test_stops_after_max_retries_or_when_the_leg_is_spent() -> None:
    """max_retries bounds the retries; a spent leg stops them before any wait."""
    clock = FakeClock()
    p = policy(clock, max_retries=2, jitter=False)
    with pytest.raises(UnavailableError):
        await drive(p, [UnavailableError("x")] * 4)
    assert len(clock.slept) == 2
    clock.slept.clear()
    with pytest.raises(UnavailableError):
        await drive(p, [UnavailableError("x")] * 2, spent=True)
    assert clock.slept == []


def test_each_plan_is_compiled_once_per_engine() -> None:
    """Equal plans share one compiled policy; a different plan gets its own."""
    clock = FakeClock()
    policies = RetryPolicies(clock.sleep, random.Random(0))
    a = policies.of(RetryPlan(max_retries=3))
    assert policies.of(RetryPlan(max_retries=3)) is a
    assert policies.of(RetryPlan(max_retries=4)) is not a

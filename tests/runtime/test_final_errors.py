"""Errors a caller can catch (issue 14): when every attempt failed the same way the final
error is that kind's class too, with every attempt attached; when they differ it is a
plain AllCandidatesFailedError. Before, every such call raised AllCandidatesFailedError
only, so `except RateLimitedError` / `except TimeoutError` / `except AuthenticationError`
caught nothing."""

from __future__ import annotations

import pytest

from engine.errors import (
    AllCandidatesFailedError,
    AuthenticationError,
    ProviderTimeoutError,
    RateLimitedError,
    UnavailableError,
)
from engine.plan.values import RetryPlan

from .doubles import ScriptedAdapter, ask, make_plan, model, rig, route

NO_RETRY = RetryPlan(max_retries=0)


def two() -> object:
    return make_plan([model("a/m1"), model("b/m2")], [route("p", ["a/m1", "b/m2"], retry=NO_RETRY)])


async def test_all_rate_limited_is_a_rate_limited_error_with_every_attempt() -> None:
    adapter = ScriptedAdapter(
        {m: [RateLimitedError("busy", provider=m, retry_after=40.0)] for m in ("m1", "m2")}
    )
    with pytest.raises(RateLimitedError) as info:
        await rig(two(), adapter).engine.arun(ask(), policy="p")
    err = info.value
    assert isinstance(err, AllCandidatesFailedError)
    assert [a.model for a in err.attempts] == ["a/m1", "b/m2"]
    assert err.status == 429 and err.retry_after == 40.0


async def test_all_timeouts_are_caught_by_the_builtin_timeout_error() -> None:
    adapter = ScriptedAdapter(
        {m: [ProviderTimeoutError("slow", phase="total")] for m in ("m1", "m2")}
    )
    with pytest.raises(TimeoutError) as info:
        await rig(two(), adapter).engine.arun(ask(), policy="p")
    assert isinstance(info.value, ProviderTimeoutError)
    assert isinstance(info.value, AllCandidatesFailedError)
    assert len(info.value.attempts) == 2 and info.value.phase == "total"


async def test_all_rejected_keys_are_an_authentication_error() -> None:
    adapter = ScriptedAdapter(
        {m: [AuthenticationError("bad key", status=401)] for m in ("m1", "m2")}
    )
    with pytest.raises(AuthenticationError) as info:
        await rig(two(), adapter).engine.arun(ask(), policy="p")
    assert {a.outcome for a in info.value.attempts} == {"authentication"}  # type: ignore[attr-defined]


async def test_mixed_failures_are_only_all_candidates_failed() -> None:
    adapter = ScriptedAdapter(
        {"m1": [RateLimitedError("busy")], "m2": [UnavailableError("down", status=503)]}
    )
    with pytest.raises(AllCandidatesFailedError) as info:
        await rig(two(), adapter).engine.arun(ask(), policy="p")
    assert not isinstance(info.value, RateLimitedError | UnavailableError)
    assert type(info.value) is AllCandidatesFailedError

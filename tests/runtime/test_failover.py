"""Failover, retries and error handling of Engine.arun over hand-built plans."""

from __future__ import annotations

import pytest

from engine import (
    AllCandidatesFailedError,
    AuthenticationError,
    BudgetExceededError,
    ContextWindowExceededError,
    InvalidRequestError,
    NoCandidateError,
    PermissionDeniedError,
    ProviderTimeoutError,
    RateLimitedError,
    UnavailableError,
    UnknownPolicyError,
)
from engine.plan.values import RetryPlan

from .doubles import ScriptedAdapter, ask, make_plan, model, provider, rig, route

NO_JITTER = RetryPlan(max_retries=2, jitter=False)


def three(**kw: object) -> object:
    models = [model("a/m1"), model("b/m2"), model("c/m3")]
    return make_plan(models, [route("p", ["a/m1", "b/m2", "c/m3"], **kw)])


async def test_first_candidate_answers_without_retries() -> None:
    """A healthy first candidate answers; one attempt, no sleep, no fallback."""
    r = rig(three())
    resp = await r.engine.arun(ask(), policy="p")
    assert resp.model == "a/m1" and resp.content == "ok from m1"
    assert [a.outcome for a in resp.attempts] == ["ok"]
    assert r.clock.slept == []


async def test_retryable_failure_retries_then_fails_over_in_order() -> None:
    """A dead candidate is retried max_retries times, then the next one in order answers."""
    adapter = ScriptedAdapter({"m1": [UnavailableError("down", status=503)]})
    r = rig(three(retry=NO_JITTER), adapter)
    resp = await r.engine.arun(ask(), policy="p")
    assert adapter.called() == ["m1", "m1", "m1", "m2"]
    assert resp.model == "b/m2"
    assert [(a.model, a.outcome, a.retry) for a in resp.attempts] == [
        ("a/m1", "unavailable", 0),
        ("a/m1", "unavailable", 1),
        ("a/m1", "unavailable", 2),
        ("b/m2", "ok", 0),
    ]
    assert [a.fallback_index for a in resp.attempts] == [0, 0, 0, 1]


async def test_backoff_is_exponential_and_uses_the_injected_clock() -> None:
    """Without jitter the sleeps are initial, initial*multiplier... on the FakeClock."""
    adapter = ScriptedAdapter({"m1": [ProviderTimeoutError("slow")] * 3 + ["ok"]})
    retry = RetryPlan(max_retries=3, backoff_initial_s=0.5, multiplier=2.0, jitter=False)
    r = rig(three(retry=retry, max_attempts=10), adapter)
    resp = await r.engine.arun(ask(), policy="p")
    assert resp.model == "a/m1"
    assert r.clock.slept == [0.5, 1.0, 2.0]


async def test_backoff_is_capped_and_jitter_stays_within_half_to_full() -> None:
    """With jitter each sleep lies in [base/2, base], base capped at backoff_max_s."""
    adapter = ScriptedAdapter({"m1": [UnavailableError("x")] * 5 + ["ok"]})
    retry = RetryPlan(max_retries=5, backoff_initial_s=1.0, backoff_max_s=4.0, multiplier=2.0)
    r = rig(three(retry=retry, max_attempts=10), adapter)
    await r.engine.arun(ask(), policy="p")
    bases = [1.0, 2.0, 4.0, 4.0, 4.0]
    assert len(r.clock.slept) == 5
    assert all(b / 2 <= s <= b for s, b in zip(r.clock.slept, bases, strict=True))


async def test_retry_after_is_honoured() -> None:
    """A 429 with Retry-After waits exactly that long before retrying the same candidate."""
    adapter = ScriptedAdapter({"m1": [RateLimitedError("slow down", retry_after=3.0), "ok"]})
    r = rig(three(retry=NO_JITTER), adapter)
    resp = await r.engine.arun(ask(), policy="p")
    assert resp.model == "a/m1" and r.clock.slept == [3.0]


async def test_retry_after_beyond_the_cap_fails_over_instead_of_waiting() -> None:
    """A Retry-After longer than max_retry_after_s moves to the next candidate at once."""
    adapter = ScriptedAdapter({"m1": [RateLimitedError("later", retry_after=120.0)]})
    r = rig(three(retry=RetryPlan(max_retry_after_s=30.0)), adapter)
    resp = await r.engine.arun(ask(), policy="p")
    assert adapter.called() == ["m1", "m2"] and resp.model == "b/m2"
    assert r.clock.slept == []


async def test_kinds_outside_retry_on_are_not_retried() -> None:
    """An error kind the policy does not list in retry_on fails over without retrying."""
    adapter = ScriptedAdapter({"m1": [ProviderTimeoutError("slow")]})
    retry = RetryPlan(retry_on=frozenset({"unavailable"}))
    r = rig(three(retry=retry), adapter)
    await r.engine.arun(ask(), policy="p")
    assert adapter.called() == ["m1", "m2"]


async def test_max_attempts_caps_calls_across_candidates() -> None:
    """No more upstream calls than max_attempts, however many candidates remain; retries
    take only the tries the candidates still waiting do not need (each keeps one)."""
    adapter = ScriptedAdapter({m: [UnavailableError("x")] for m in ("m1", "m2", "m3")})
    r = rig(three(retry=NO_JITTER, max_attempts=4), adapter)
    with pytest.raises(AllCandidatesFailedError) as info:
        await r.engine.arun(ask(), policy="p")
    assert adapter.called() == ["m1", "m1", "m2", "m3"]
    assert len(info.value.attempts) == 4


async def test_all_failed_lists_every_attempt() -> None:
    """When everything fails, one error names each candidate tried and its outcome."""
    adapter = ScriptedAdapter(
        {
            "m1": [UnavailableError("boom", status=502)],
            "m2": [PermissionDeniedError("no access")],
            "m3": [RateLimitedError("busy")],
        }
    )
    r = rig(three(retry=RetryPlan(max_retries=0)), adapter)
    with pytest.raises(AllCandidatesFailedError) as info:
        await r.engine.arun(ask(), policy="p")
    err = info.value
    assert [(a.model, a.outcome) for a in err.attempts] == [
        ("a/m1", "unavailable"),
        ("b/m2", "permission_denied"),
        ("c/m3", "rate_limited"),
    ]
    assert "a/m1" in str(err) and "c/m3" in str(err)
    assert err.last_status == 429


async def test_invalid_request_fails_at_once() -> None:
    """A 400 that no other provider would accept is raised after one call."""
    adapter = ScriptedAdapter({"m1": [InvalidRequestError("bad temperature")]})
    r = rig(three(), adapter)
    with pytest.raises(InvalidRequestError):
        await r.engine.arun(ask(), policy="p")
    assert adapter.called() == ["m1"]


async def test_auth_error_skips_the_key_and_tries_the_next_key_without_sleeping() -> None:
    """A 401 retires that key; the same model is tried with the provider's other key."""
    adapter = ScriptedAdapter({"m1": [AuthenticationError("bad key"), "ok"]})
    plan = make_plan(
        [model("a/m1"), model("b/m2")],
        [route("p", ["a/m1", "b/m2"])],
        [provider("a", keys=2), provider("b")],
    )
    r = rig(plan, adapter)
    resp = await r.engine.arun(ask(), policy="p")
    assert resp.model == "a/m1"
    assert [c.key_id for c in adapter.calls] == ["a#0", "a#1"]
    assert r.clock.slept == []
    await r.engine.arun(ask(), policy="p")
    assert adapter.calls[-1].key_id == "a#1"  # the rejected key stays retired


async def test_auth_error_on_the_only_key_skips_the_provider() -> None:
    """With no key left, every model of that provider is skipped for the request."""
    adapter = ScriptedAdapter({"m1": [AuthenticationError("bad key")]})
    plan = make_plan(
        [model("a/m1"), model("a/m4"), model("b/m2")], [route("p", ["a/m1", "a/m4", "b/m2"])]
    )
    r = rig(plan, adapter)
    resp = await r.engine.arun(ask(), policy="p")
    assert adapter.called() == ["m1", "m2"] and resp.model == "b/m2"


async def test_context_window_error_skips_to_a_larger_window() -> None:
    """After a context-window error only candidates with a larger window are tried."""
    adapter = ScriptedAdapter({"small": [ContextWindowExceededError("too long")]})
    models = [
        model("a/small", window=8000),
        model("b/same", window=8000),
        model("c/large", window=128000),
    ]
    r = rig(make_plan(models, [route("p", ["a/small", "b/same", "c/large"])]), adapter)
    resp = await r.engine.arun(ask(), policy="p")
    assert adapter.called() == ["small", "large"] and resp.model == "c/large"
    assert ("b/same", "context_window_exceeded") in [(a.model, a.outcome) for a in resp.attempts]


async def test_disabled_provider_is_never_called() -> None:
    """A provider disabled in the plan is skipped with its reason recorded."""
    plan = make_plan(
        [model("a/m1"), model("b/m2")],
        [route("p", ["a/m1", "b/m2"])],
        [provider("a", enabled=False), provider("b")],
    )
    r = rig(plan)
    resp = await r.engine.arun(ask(), policy="p")
    assert r.adapter.called() == ["m2"]
    assert resp.attempts[0].outcome == "disabled"


async def test_chain_then_fallback_policy_are_tried_after_the_ranking() -> None:
    """The route's chain follows its ranking, then its fallback_policy's candidates."""
    adapter = ScriptedAdapter({m: [UnavailableError("x")] for m in ("m1", "m2")})
    models = [model("a/m1"), model("b/m2"), model("c/m3")]
    routes = [
        route("p", ["a/m1"], chain=("b/m2",), fallback_policy="q", retry=RetryPlan(max_retries=0)),
        route("q", ["c/m3"]),
    ]
    r = rig(make_plan(models, routes), adapter)
    resp = await r.engine.arun(ask(), policy="p")
    assert adapter.called() == ["m1", "m2", "m3"]
    assert resp.model == "c/m3" and resp.policy == "q"


async def test_unknown_policy_is_a_precise_error() -> None:
    """An unknown policy name raises UnknownPolicyError naming the known ones."""
    r = rig(three())
    with pytest.raises(UnknownPolicyError, match=r"'nope'.*p"):
        await r.engine.arun(ask(), policy="nope")


async def test_no_candidate_error_propagates_from_selection() -> None:
    """When selection eliminates everything, NoCandidateError says why, without calls."""
    r = rig(three())
    with pytest.raises(NoCandidateError):
        await r.engine.arun(ask(capabilities=["vision"]), policy="p")
    assert r.adapter.calls == []


async def test_local_rate_limit_exhaustion_fails_over_without_a_call() -> None:
    """A provider whose keys are all exhausted locally is passed over with no request."""
    r = rig(three())
    r.limiter.exhausted.add("a")
    resp = await r.engine.arun(ask(), policy="p")
    assert r.adapter.called() == ["m2"]
    assert resp.attempts[0].outcome == "rate_limited"


async def test_workspace_budget_exhausted_raises_budget_exceeded() -> None:
    """If the workspace budget allows no candidate, BudgetExceededError and no call."""
    from engine.plan.values import BudgetPlan

    r = rig(three(budget=BudgetPlan(daily_usd=0.0)))
    with pytest.raises(BudgetExceededError):
        await r.engine.arun(ask(metadata={"workspace": "w"}), policy="p")
    assert r.adapter.calls == []


async def test_final_error_names_each_model_once() -> None:
    """Attempts hold full model ids; the message does not repeat the provider prefix."""
    adapter = ScriptedAdapter({m: [UnavailableError("x")] for m in ("m1", "m2", "m3")})
    r = rig(three(retry=RetryPlan(max_retries=0)), adapter)
    with pytest.raises(AllCandidatesFailedError) as info:
        await r.engine.arun(ask(), policy="p")
    assert info.value.attempts[0].model == "a/m1"
    assert "a/m1: unavailable" in str(info.value) and "a/a/m1" not in str(info.value)


async def test_retry_after_is_shared_with_the_rate_limiter() -> None:
    """A provider's Retry-After is passed to the limiter, so other calls on that key wait too."""
    adapter = ScriptedAdapter({"m1": [RateLimitedError("slow down", retry_after=3.0), "ok"]})
    r = rig(three(retry=NO_JITTER), adapter)
    await r.engine.arun(ask(), policy="p")
    assert [i.retry_after_s for i in r.limiter.observed] == [3.0]

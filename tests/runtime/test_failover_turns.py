"""Failover that does what the config says (issue 14): a provider that cannot be reached
is skipped for the rest of the call, retries leave every waiting candidate (the chain, the
fallback policy) its turn, and a pool-wait timeout never feeds the provider's breaker."""

from __future__ import annotations

from engine.errors import ProviderTimeoutError, UnavailableError
from engine.plan.values import BreakerPlan, RetryPlan

from .doubles import ScriptedAdapter, ask, make_plan, model, rig, route

RETRY = RetryPlan(max_retries=2, jitter=False)


def refused() -> UnavailableError:
    """What the transport raises for a refused connection: the request never left."""
    err = UnavailableError("a: cannot reach upstream (ConnectionRefusedError)", provider="a")
    err.reached = False
    return err


async def test_an_unreachable_provider_is_skipped_for_the_call_and_not_retried() -> None:
    """Connection refused on a/m1: a/m2 is skipped without a call, b/m3 answers at once."""
    models = [model("a/m1"), model("a/m2"), model("b/m3")]
    plan = make_plan(models, [route("p", ["a/m1", "a/m2", "b/m3"], retry=RETRY)])
    adapter = ScriptedAdapter({"m1": [refused()], "m2": [refused()]})
    r = rig(plan, adapter)
    resp = await r.engine.arun(ask(), policy="p")
    assert adapter.called() == ["m1", "m3"]
    assert [(a.model, a.outcome) for a in resp.attempts] == [
        ("a/m1", "unavailable"),
        ("a/m2", "skipped"),
        ("b/m3", "ok"),
    ]
    assert "unreachable" in (resp.attempts[1].error or "")
    assert r.clock.slept == []  # no backoff spent on an address that refused


async def test_a_reached_failure_of_one_model_does_not_skip_its_provider() -> None:
    """A 503 from a/m1 says nothing about a/m2: it is still tried."""
    models = [model("a/m1"), model("a/m2")]
    plan = make_plan(models, [route("p", ["a/m1", "a/m2"], retry=RETRY, max_attempts=10)])
    adapter = ScriptedAdapter({"m1": [UnavailableError("down", status=503)]})
    resp = await rig(plan, adapter).engine.arun(ask(), policy="p")
    assert adapter.called() == ["m1", "m1", "m1", "m2"] and resp.model == "a/m2"


async def test_retries_leave_the_chain_its_turn() -> None:
    """Two dead ranked models with max_retries 2 and max_attempts 3: before, m1 took all
    three tries and the chain was never reached; now each candidate gets one."""
    models = [model("a/m1"), model("b/m2"), model("c/m3")]
    routes = [route("p", ["a/m1", "b/m2"], chain=("c/m3",), retry=RETRY, max_attempts=3)]
    down = UnavailableError("down", status=503)
    adapter = ScriptedAdapter({"m1": [down], "m2": [down]})
    resp = await rig(make_plan(models, routes), adapter).engine.arun(ask(), policy="p")
    assert adapter.called() == ["m1", "m2", "m3"] and resp.model == "c/m3"


async def test_retries_leave_the_fallback_policy_its_turn() -> None:
    """The fallback policy's candidates are owed a try too."""
    models = [model("a/m1"), model("b/m2")]
    routes = [
        route("p", ["a/m1"], fallback_policy="q", retry=RETRY, max_attempts=2),
        route("q", ["b/m2"]),
    ]
    plan = make_plan(models, routes)
    adapter = ScriptedAdapter({"m1": [UnavailableError("down", status=503)]})
    resp = await rig(plan, adapter).engine.arun(ask(), policy="p")
    assert adapter.called() == ["m1", "m2"] and resp.model == "b/m2"


async def test_a_lone_candidate_still_gets_its_retries() -> None:
    """Nothing waiting: the spare tries go to retries, as max_retries says."""
    plan = make_plan([model("a/m1")], [route("p", ["a/m1"], retry=RETRY)])
    adapter = ScriptedAdapter({"m1": [UnavailableError("x"), UnavailableError("x"), "ok"]})
    resp = await rig(plan, adapter).engine.arun(ask(), policy="p")
    assert adapter.called() == ["m1", "m1", "m1"] and resp.model == "a/m1"


async def test_a_pool_wait_timeout_does_not_open_the_breaker() -> None:
    """A pool wait that timed out is local congestion: with a one-failure breaker, the
    provider is still called next time (before, the breaker opened)."""
    models = [model("a/m1"), model("b/m2")]
    breaker = BreakerPlan(failures=1, window_s=60, cooldown_s=30)
    plan = make_plan(
        models, [route("p", ["a/m1", "b/m2"], breaker=breaker, retry=RetryPlan(max_retries=0))]
    )
    pool = ProviderTimeoutError("a: no connection free", phase="pool", provider="a")
    pool.reached = False
    adapter = ScriptedAdapter({"m1": [pool, "ok"]})
    r = rig(plan, adapter)
    first = await r.engine.arun(ask(), policy="p")
    assert [a.outcome for a in first.attempts] == ["timeout", "ok"]
    second = await r.engine.arun(ask(), policy="p")
    assert [(a.model, a.outcome) for a in second.attempts] == [("a/m1", "ok")]

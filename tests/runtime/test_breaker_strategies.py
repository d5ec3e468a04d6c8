"""Circuit breakers and dynamic strategies, observed through Engine calls."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from engine import AllCandidatesFailedError
from engine.errors import UnavailableError
from engine.plan.compiled import Plan
from engine.plan.values import BreakerPlan, RetryPlan, StrategyPlan

from .doubles import ScriptedAdapter, ask, make_plan, model, rig, route

ONE_TRY = RetryPlan(max_retries=0)
BREAKER = BreakerPlan(failures=3, window_s=60.0, cooldown_s=30.0)


def pair(**kw: object) -> Plan:
    return make_plan(
        [model("a/m1"), model("b/m2")],
        [route("p", ["a/m1", "b/m2"], retry=ONE_TRY, breaker=BREAKER, **kw)],  # type: ignore[arg-type]
    )


async def test_breaker_opens_after_n_failures_and_then_costs_no_call() -> None:
    """After N failures in the window the provider is skipped with no network call."""
    adapter = ScriptedAdapter({"m1": [UnavailableError("down")]})
    r = rig(pair(), adapter)
    for _ in range(3):
        await r.engine.arun(ask(), policy="p")
    assert adapter.called().count("m1") == 3
    resp = await r.engine.arun(ask(), policy="p")
    assert adapter.called().count("m1") == 3  # no fourth call
    assert resp.attempts[0].outcome == "circuit_open" and resp.model == "b/m2"
    health = await r.engine.health()
    assert health["providers"]["a"]["status"] == "open"
    assert r.engine.is_available("a") is False


async def test_failures_outside_the_window_do_not_open_the_breaker() -> None:
    """Failures older than window_s are forgotten."""
    adapter = ScriptedAdapter({"m1": [UnavailableError("down")]})
    r = rig(pair(), adapter)
    for _ in range(2):
        await r.engine.arun(ask(), policy="p")
    r.clock.advance(61)
    await r.engine.arun(ask(), policy="p")
    await r.engine.arun(ask(), policy="p")
    assert adapter.called().count("m1") == 4


async def test_a_success_between_failures_does_not_reset_the_window() -> None:
    """Failures are counted in the window, not consecutively: fail, fail, ok, fail opens."""
    down = UnavailableError("down")
    adapter = ScriptedAdapter({"m1": [down, down, "ok", down]})
    r = rig(pair(), adapter)
    models = [(await r.engine.arun(ask(), policy="p")).model for _ in range(4)]
    assert models == ["b/m2", "b/m2", "a/m1", "b/m2"]
    resp = await r.engine.arun(ask(), policy="p")
    assert adapter.called().count("m1") == 4  # the fifth request sent nothing to m1
    assert resp.attempts[0].outcome == "circuit_open"


async def test_the_window_slides_failures_out_one_by_one() -> None:
    """Only failures younger than window_s count: the oldest one expiring keeps it closed."""
    adapter = ScriptedAdapter({"m1": [UnavailableError("down")]})
    r = rig(pair(), adapter)
    await r.engine.arun(ask(), policy="p")  # t=0
    r.clock.advance(40)
    await r.engine.arun(ask(), policy="p")  # t=40
    r.clock.advance(21)
    await r.engine.arun(ask(), policy="p")  # t=61: the t=0 failure has left the window
    assert adapter.called().count("m1") == 3
    await r.engine.arun(ask(), policy="p")  # t=61: third failure inside the window
    assert adapter.called().count("m1") == 4
    resp = await r.engine.arun(ask(), policy="p")
    assert adapter.called().count("m1") == 4
    assert resp.attempts[0].outcome == "circuit_open"


async def test_provider_breaker_counts_failures_of_all_its_models() -> None:
    """Failures of two models of one provider add up in the provider's breaker."""
    plan = make_plan(
        [model("a/m1"), model("a/m3"), model("b/m2")],
        [route("p", ["a/m1", "a/m3", "b/m2"], retry=ONE_TRY, breaker=BREAKER)],
    )
    adapter = ScriptedAdapter({"m1": [UnavailableError("x")], "m3": [UnavailableError("y")]})
    r = rig(plan, adapter)
    await r.engine.arun(ask(), policy="p")  # m1 and m3 fail: provider a at 2
    resp = await r.engine.arun(ask(), policy="p")  # m1 fails: provider a at 3, opens
    assert adapter.called().count("m1") == 2 and adapter.called().count("m3") == 1
    assert [a.outcome for a in resp.attempts] == ["unavailable", "circuit_open", "ok"]
    assert (await r.engine.health())["providers"]["a"]["status"] == "open"


async def test_a_straggler_success_does_not_close_an_open_breaker() -> None:
    """A call that started before the breaker opened and succeeds later leaves it open."""
    down = UnavailableError("down")
    adapter = ScriptedAdapter({"m1": [down, down, down, "ok"]})
    r = rig(pair(), adapter)
    gate = asyncio.Event()
    adapter.gate = gate
    tasks = [asyncio.create_task(r.engine.arun(ask(), policy="p")) for _ in range(4)]
    await asyncio.sleep(0.01)
    gate.set()
    results = await asyncio.gather(*tasks)
    assert sorted(x.model for x in results) == ["a/m1", "b/m2", "b/m2", "b/m2"]
    adapter.gate = None
    resp = await r.engine.arun(ask(), policy="p")
    assert adapter.called().count("m1") == 4
    assert resp.attempts[0].outcome == "circuit_open"


async def test_half_open_lets_exactly_one_probe_through_and_success_closes() -> None:
    """After the cooldown one probe goes through; concurrent callers skip; success closes."""
    adapter = ScriptedAdapter({"m1": [UnavailableError("down")] * 3 + ["ok"]})
    r = rig(pair(), adapter)
    for _ in range(3):
        await r.engine.arun(ask(), policy="p")
    r.clock.advance(31)
    gate = asyncio.Event()
    adapter.gate = gate
    tasks = [asyncio.create_task(r.engine.arun(ask(), policy="p")) for _ in range(3)]
    await asyncio.sleep(0.01)
    gate.set()
    results = await asyncio.gather(*tasks)
    assert adapter.called().count("m1") == 4  # three failures + exactly one probe
    assert sorted(x.model for x in results) == ["a/m1", "b/m2", "b/m2"]
    await r.engine.arun(ask(), policy="p")
    assert adapter.called().count("m1") == 5  # closed again
    assert (await r.engine.health())["providers"]["a"]["status"] == "degraded"  # recent errors
    for _ in range(20):
        await r.engine.arun(ask(), policy="p")
    assert (await r.engine.health())["providers"]["a"]["status"] == "healthy"


async def test_failed_probe_reopens_for_another_cooldown() -> None:
    """A failing half-open probe re-opens the breaker; no call until the next cooldown."""
    adapter = ScriptedAdapter({"m1": [UnavailableError("down")]})
    r = rig(pair(), adapter)
    for _ in range(3):
        await r.engine.arun(ask(), policy="p")
    r.clock.advance(31)
    await r.engine.arun(ask(), policy="p")
    assert adapter.called().count("m1") == 4
    r.clock.advance(10)
    await r.engine.arun(ask(), policy="p")
    assert adapter.called().count("m1") == 4


async def test_only_open_breakers_everywhere_raise_all_failed_without_calls() -> None:
    """When every breaker is open the error lists circuit_open attempts and nothing is sent."""
    adapter = ScriptedAdapter({"m1": [UnavailableError("x")], "m2": [UnavailableError("x")]})
    r = rig(pair(), adapter)
    for _ in range(3):
        with pytest.raises(AllCandidatesFailedError):
            await r.engine.arun(ask(), policy="p")
    calls = len(adapter.calls)
    with pytest.raises(AllCandidatesFailedError) as info:
        await r.engine.arun(ask(), policy="p")
    assert {a.outcome for a in info.value.attempts} == {"circuit_open"}
    assert len(adapter.calls) == calls


def trio(strategy: StrategyPlan) -> Plan:
    models = [model("a/m1", latency=300), model("b/m2", latency=100), model("c/m3", latency=200)]
    return make_plan(models, [route("p", ["a/m1", "b/m2", "c/m3"], strategy=strategy)])


async def test_round_robin_is_exactly_fair() -> None:
    """Round robin spreads 300 calls 100/100/100 over three candidates."""
    r = rig(trio(StrategyPlan("round_robin")))
    for _ in range(300):
        await r.engine.arun(ask(), policy="p")
    assert Counter(r.adapter.called()) == {"m1": 100, "m2": 100, "m3": 100}


async def test_weighted_follows_weights_and_is_deterministic_under_a_seed() -> None:
    """Weighted picks in proportion to weights; the same seed gives the same sequence."""
    weights = {"a/m1": 1.0, "b/m2": 2.0, "c/m3": 7.0}
    strategy = StrategyPlan("weighted", candidate_weights=weights, seed=7)
    sequences = []
    for _ in range(2):
        r = rig(trio(strategy), seed=3)
        for _ in range(1000):
            await r.engine.arun(ask(), policy="p")
        sequences.append(r.adapter.called())
    assert sequences[0] == sequences[1]
    counts = Counter(sequences[0])
    assert counts["m3"] > counts["m2"] > counts["m1"] > 0
    assert 600 <= counts["m3"] <= 800


async def test_weighted_changes_with_the_seed() -> None:
    """A different seed gives a different (but equally fair) sequence."""
    strategy = StrategyPlan("weighted", candidate_weights={"a/m1": 1, "b/m2": 1, "c/m3": 1})
    seqs = []
    for seed in (1, 2):
        r = rig(trio(strategy), seed=seed)
        for _ in range(60):
            await r.engine.arun(ask(), policy="p")
        seqs.append(r.adapter.called())
    assert seqs[0] != seqs[1]


async def test_latency_optimized_uses_priors_then_measurements() -> None:
    """Untried, the registry prior decides; once measured, the moving average does."""
    adapter = ScriptedAdapter()
    adapter.latency_s = {"m1": 0.4, "m2": 0.9, "m3": 0.05}
    r = rig(trio(StrategyPlan("latency_optimized")), adapter)
    adapter.clock = r.clock
    await r.engine.arun(ask(), policy="p")
    assert r.adapter.called()[0] == "m2"  # prior 100 ms
    for pin in ("a/m1", "b/m2", "c/m3"):  # pins are measured like any other call
        await r.engine.arun(ask(model=pin))
    picks = []
    for _ in range(20):
        await r.engine.arun(ask(), policy="p")
        picks.append(r.adapter.called()[-1])
    assert Counter(picks).most_common(1)[0][0] == "m3"
    assert r.engine.fastest_model().id == "c/m3"  # type: ignore[union-attr]


async def test_latency_optimized_explores_untried_candidates() -> None:
    """A candidate never measured still gets tried now and then, even if its prior is slow."""
    models = [model("a/fast", latency=10), model("b/slow", latency=5000)]
    plan = make_plan(
        models, [route("p", ["a/fast", "b/slow"], strategy=StrategyPlan("latency_optimized"))]
    )
    r = rig(plan)
    for _ in range(100):
        await r.engine.arun(ask(), policy="p")
    assert "slow" in r.adapter.called()


async def test_least_loaded_prefers_the_candidate_with_fewer_in_flight() -> None:
    """With one call in flight on the first candidate, the next call goes elsewhere."""
    adapter = ScriptedAdapter()
    r = rig(trio(StrategyPlan("least_loaded")), adapter)
    gate = asyncio.Event()
    adapter.gate = gate
    first = asyncio.create_task(r.engine.arun(ask(), policy="p"))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    second = asyncio.create_task(r.engine.arun(ask(), policy="p"))
    await asyncio.sleep(0.01)
    gate.set()
    a, b = await asyncio.gather(first, second)
    assert a.model != b.model

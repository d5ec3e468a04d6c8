"""Routing inputs of a request: pins, fallbacks, budgets, cache, templates; and cancellation."""

from __future__ import annotations

import asyncio

import pytest

from engine import (
    AllCandidatesFailedError,
    BudgetExceededError,
    RequestError,
    UnavailableError,
    UnknownModelError,
)
from engine.plan.compiled import Plan
from engine.plan.values import BudgetPlan, CachePlan, RetryPlan, TemplatePlan

from .doubles import ScriptedAdapter, ask, make_plan, model, rig, route

ONE_TRY = RetryPlan(max_retries=0)


def cheap_and_dear(**kw: object) -> Plan:
    models = [model("a/dear", price=(30.0, 60.0)), model("b/cheap", price=(0.1, 0.2))]
    return make_plan(models, [route("p", ["a/dear", "b/cheap"], **kw)])  # type: ignore[arg-type]


async def test_pin_skips_selection_but_keeps_retries() -> None:
    """A provider/name pin calls that model directly, retrying per the defaults."""
    adapter = ScriptedAdapter({"cheap": [UnavailableError("blip"), "ok"]})
    r = rig(cheap_and_dear(), adapter)
    resp = await r.engine.arun(ask(model="b/cheap"))
    assert adapter.called() == ["cheap", "cheap"] and resp.model == "b/cheap"
    assert resp.policy is None and len(r.clock.slept) == 1
    assert resp.cost_usd is not None and resp.cost_usd > 0


async def test_pin_of_an_unlisted_model_works_with_unknown_cost() -> None:
    """A pin the registry does not list is called; its cost is None, never 0."""
    r = rig(cheap_and_dear())
    resp = await r.engine.arun(ask(model="a/brand-new-model"))
    assert r.adapter.called() == ["brand-new-model"]
    assert resp.cost_usd is None
    assert r.ledger.rows[-1].cost_usd is None
    assert r.engine.stats()["totals"]["unknown_cost_responses"] == 1


async def test_pin_of_an_unknown_provider_is_a_precise_error() -> None:
    """A pin naming no configured provider raises UnknownModelError."""
    r = rig(cheap_and_dear())
    with pytest.raises(UnknownModelError, match="nowhere/x"):
        await r.engine.arun(ask(model="nowhere/x"))


async def test_request_fallbacks_are_tried_in_order_after_the_primary() -> None:
    """request.fallbacks (pins or policies) run after the primary target fails."""
    adapter = ScriptedAdapter(
        {"dear": [UnavailableError("down")], "cheap": [UnavailableError("down")]}
    )
    models = [model("a/dear"), model("b/cheap"), model("c/other")]
    routes = [route("p", ["a/dear"], retry=ONE_TRY), route("q", ["c/other"])]
    r = rig(make_plan(models, routes), adapter)
    resp = await r.engine.arun(ask(fallbacks=["b/cheap", "q"]), policy="p")
    assert adapter.called() == ["dear", "cheap", "cheap", "cheap", "other"]
    assert resp.model == "c/other" and resp.policy == "q"
    assert [a.fallback_index for a in resp.attempts][-1] == 2


async def test_request_budget_filters_candidates_by_worst_case_cost() -> None:
    """budget_usd removes candidates whose worst-case cost exceeds it, before any call."""
    r = rig(cheap_and_dear())
    resp = await r.engine.arun(ask(budget_usd=0.001, max_tokens=100), policy="p")
    assert r.adapter.called() == ["cheap"] and resp.model == "b/cheap"
    assert resp.attempts[0].outcome == "budget_exceeded"


async def test_budget_too_small_for_everyone_raises_budget_exceeded() -> None:
    """If no candidate fits the request budget, BudgetExceededError and no network call."""
    r = rig(cheap_and_dear())
    with pytest.raises(BudgetExceededError):
        await r.engine.arun(ask(budget_usd=0.0000001, max_tokens=100), policy="p")
    assert r.adapter.calls == []


async def test_workspace_budget_reserves_then_settles_to_the_real_cost() -> None:
    """The worst case is reserved during the call and replaced by the actual cost after."""
    r = rig(cheap_and_dear(budget=BudgetPlan(daily_usd=10.0)))
    resp = await r.engine.arun(ask(metadata={"workspace": "w1"}, max_tokens=50), policy="p")
    assert r.budget.reserved == {}
    assert r.budget.spent_usd["w1"] == pytest.approx(resp.cost_usd)


async def test_cancellation_cancels_the_call_and_releases_reservations() -> None:
    """Cancelling a call in flight releases its budget reservation and rate-limit lease."""
    adapter = ScriptedAdapter()
    adapter.gate = asyncio.Event()  # never set: the upstream hangs
    r = rig(cheap_and_dear(budget=BudgetPlan(daily_usd=10.0)), adapter)
    task = asyncio.create_task(r.engine.arun(ask(metadata={"workspace": "w"}), policy="p"))
    while not adapter.calls:  # until the call hangs upstream (no wall-clock guess)
        await asyncio.sleep(0)
    assert len(r.budget.reserved) == 1 and r.limiter.open == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)
    assert r.budget.reserved == {} and r.limiter.open == 0
    assert r.limiter.released == ["a#0"]
    assert r.budget.spent_usd.get("w", 0.0) == 0.0
    assert r.engine.stats()["providers"] == {}  # a cancelled call is not a failure
    assert [row.outcome for row in r.ledger.rows] == ["cancelled"]
    assert r.ledger.rows[0].cost_usd is None


async def test_failed_attempts_release_their_reservation() -> None:
    """A failed attempt gives its reservation back before the next candidate reserves."""
    adapter = ScriptedAdapter({"dear": [UnavailableError("x")]})
    r = rig(cheap_and_dear(budget=BudgetPlan(daily_usd=10.0), retry=ONE_TRY), adapter)
    resp = await r.engine.arun(ask(metadata={"workspace": "w"}, max_tokens=10), policy="p")
    assert resp.model == "b/cheap" and r.budget.reserved == {}
    assert r.budget.spent_usd["w"] == pytest.approx(resp.cost_usd)


async def test_cache_hit_costs_nothing_and_makes_no_call() -> None:
    """A repeated request is answered from the cache: cached=True, cost 0, no upstream call."""
    r = rig(cheap_and_dear(cache=CachePlan(enabled=True)))
    first = await r.engine.arun(ask(), policy="p")
    second = await r.engine.arun(ask(), policy="p")
    assert len(r.adapter.calls) == 1
    assert second.cached and second.cost_usd == 0.0 and second.content == first.content
    totals = r.engine.stats()["totals"]
    assert totals["cache_hits"] == 1 and totals["requests"] == 2
    assert r.ledger.rows[-1].cached is True


async def test_cache_bypass_and_clear() -> None:
    """cache=False in the request bypasses the cache; eng.cache.clear() empties it."""
    r = rig(cheap_and_dear(cache=CachePlan(enabled=True)))
    await r.engine.arun(ask(), policy="p")
    await r.engine.arun(ask(cache=False), policy="p")
    assert len(r.adapter.calls) == 2
    await r.engine.cache.clear()
    await r.engine.arun(ask(), policy="p")
    assert len(r.adapter.calls) == 3


async def test_cached_answer_replays_as_a_stream() -> None:
    """A cached answer streams back as events, the last with finish reason and usage."""
    r = rig(cheap_and_dear(cache=CachePlan(enabled=True)))
    first = await r.engine.arun(ask(), policy="p")
    events = [e async for e in r.engine.astream(ask(), policy="p")]
    assert "".join(e.content for e in events) == first.content
    assert all(e.cached for e in events) and events[-1].chunk.finish_reason == "stop"
    assert len(r.adapter.calls) == 1


async def test_template_renders_system_prompt_from_variables() -> None:
    """A route's system template is rendered with the request's variables."""
    tpl = TemplatePlan(system="You answer in {{ lang }}.", user="Q: {{ input }}")
    r = rig(cheap_and_dear(template=tpl))
    await r.engine.arun(ask("hi", variables={"lang": "French"}), policy="p")
    sent = r.adapter.calls[0].request.messages
    assert [m.role for m in sent] == ["system", "user"]
    assert sent[0].text() == "You answer in French." and sent[1].text() == "Q: hi"


async def test_template_missing_variable_is_a_request_error() -> None:
    """A variable the template needs but the request lacks is a RequestError, not blank."""
    r = rig(
        cheap_and_dear(
            template=TemplatePlan(system="Hi {{ name }}"), budget=BudgetPlan(daily_usd=5.0)
        )
    )
    with pytest.raises(RequestError, match="name"):
        await r.engine.arun(ask(metadata={"workspace": "w"}), policy="p")
    assert r.adapter.calls == []
    assert r.limiter.open == 0 and r.budget.reserved == {}  # nothing left held


async def test_template_sandbox_blocks_attribute_tricks() -> None:
    """Template code cannot reach Python internals through attributes."""
    tpl = TemplatePlan(system="{{ ''.__class__.__mro__[1].__subclasses__() }}")
    r = rig(cheap_and_dear(template=tpl))
    with pytest.raises(RequestError):
        await r.engine.arun(ask(), policy="p")


async def test_every_attempt_is_written_to_the_ledger() -> None:
    """Each upstream attempt, failed or not, becomes one ledger row without secrets."""
    adapter = ScriptedAdapter({"dear": [UnavailableError("x")]})
    r = rig(cheap_and_dear(retry=ONE_TRY), adapter)
    await r.engine.arun(ask(metadata={"workspace": "team"}), policy="p")
    rows = [(x.model, x.outcome, x.fallback_index, x.workspace) for x in r.ledger.rows]
    assert rows == [("a/dear", "unavailable", 0, "team"), ("b/cheap", "ok", 1, "team")]
    assert len({x.request_id for x in r.ledger.rows}) == 1
    assert "sk-test" not in repr(r.ledger.rows)


async def test_stats_totals_and_per_provider() -> None:
    """stats() counts requests, fallbacks, tokens and cost, and per provider outcomes."""
    adapter = ScriptedAdapter({"dear": [UnavailableError("x")]})
    r = rig(cheap_and_dear(retry=ONE_TRY), adapter)
    adapter.clock, adapter.latency_s = r.clock, {"cheap": 0.1}
    await r.engine.arun(ask(), policy="p")
    await r.engine.arun(ask(), policy="p")
    s = r.engine.stats()
    assert s["totals"]["requests"] == 2 and s["totals"]["fallbacks"] == 2
    assert s["totals"]["input_tokens"] == 20 and s["totals"]["output_tokens"] == 10
    assert s["providers"]["a"]["failures"] == 2 and s["providers"]["a"]["error_rate"] == 1.0
    assert s["providers"]["b"]["successes"] == 2
    assert s["models"]["b/cheap"]["latency_p50_ms"] == pytest.approx(100.0)


async def test_failed_request_is_counted() -> None:
    """A request that fails entirely counts as a failure in the totals."""
    adapter = ScriptedAdapter({"dear": [UnavailableError("x")], "cheap": [UnavailableError("x")]})
    r = rig(cheap_and_dear(retry=ONE_TRY), adapter)
    with pytest.raises(AllCandidatesFailedError):
        await r.engine.arun(ask(), policy="p")
    assert r.engine.stats()["totals"]["failures"] == 1


async def test_fallbacks_apply_when_the_primary_policy_has_no_candidate() -> None:
    """If the primary policy eliminates everything, the request's fallbacks still run."""
    models = [model("a/m1"), model("b/eyes", caps=("chat", "vision"))]
    r = rig(make_plan(models, [route("p", ["a/m1"])]))
    resp = await r.engine.arun(ask(capabilities=["vision"], fallbacks=["b/eyes"]), policy="p")
    assert resp.model == "b/eyes" and r.adapter.called() == ["eyes"]


async def test_unknown_fallback_target_is_an_error_not_silently_skipped() -> None:
    """A typo in request.fallbacks is reported before any call is made."""
    r = rig(cheap_and_dear())
    with pytest.raises(UnknownModelError, match="nowhere/x"):
        await r.engine.arun(ask(fallbacks=["nowhere/x"]), policy="p")
    with pytest.raises(RequestError, match="polciy"):
        await r.engine.arun(ask(fallbacks=["polciy"]), policy="p")
    assert r.adapter.calls == []


async def test_a_unique_bare_model_name_is_pinned_and_an_ambiguous_one_refused() -> None:
    """model="cheap" pins b/cheap (as OpenAI clients send names); a shared name is an error."""
    models = [model("a/dear"), model("b/cheap"), model("a/twin"), model("b/twin")]
    r = rig(make_plan(models, [route("p", ["a/dear"])]))
    resp = await r.engine.arun(ask(model="cheap"))
    assert resp.model == "b/cheap"
    with pytest.raises(UnknownModelError, match=r"ambiguous.*a/twin, b/twin"):
        await r.engine.arun(ask(model="twin"))
    with pytest.raises(RequestError, match="nothing-like-this"):
        await r.engine.arun(ask(model="nothing-like-this"))

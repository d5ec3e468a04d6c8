"""The failover loop is generic over the adapter operation: another endpoint (here a
stand-in embeddings call) gets admission, retries, failover and the records by supplying
one operation, without touching the loop."""

from __future__ import annotations

from engine.errors import UnavailableError
from engine.messages import ProviderResponse, Request, Usage, parse_request
from engine.plan.values import RetryPlan
from engine.providers.base import Adapter
from engine.runtime.call.attempt import Attempt
from engine.runtime.call.data import Trail, call_data
from engine.runtime.call.failover import Failover
from engine.runtime.call.walk import Walk

from ..doubles import ScriptedAdapter, ask, make_plan, model, rig, route


class EmbeddingAdapter(ScriptedAdapter):
    """The scripted adapter plus an `embed` method, as an embeddings-capable adapter."""

    async def embed(self, request: Request, endpoint: object) -> list[float]:
        out = await self.complete(request, endpoint)  # type: ignore[arg-type]
        assert isinstance(out, ProviderResponse) and out.content
        return [float(len(out.content)), float(len(endpoint.upstream_model))]  # type: ignore[attr-defined]


class Embed:
    """One embeddings call inside an open attempt: the whole operation is these lines."""

    holds = False

    async def __call__(self, adapter: Adapter, attempt: Attempt) -> list[float]:
        assert isinstance(adapter, EmbeddingAdapter)
        vector = await adapter.embed(attempt.request, attempt.endpoint)
        attempt.answered(Usage(input_tokens=3, output_tokens=0), None)
        return vector


async def test_another_operation_gets_retries_failover_and_records() -> None:
    """A failing first candidate is retried, then the next answers the new operation;
    every try is in the trail, the ledger and the stats, exactly as for chat."""
    adapter = EmbeddingAdapter({"m1": [UnavailableError("down", status=503)]})
    plan = make_plan(
        [model("a/m1"), model("b/m2")],
        [route("p", ["a/m1", "b/m2"], retry=RetryPlan(max_retries=1, jitter=False))],
    )
    r = rig(plan, adapter)
    svc = r.engine._svc
    request = parse_request(ask("embed me"))
    call = call_data(plan, request, svc.features(request), False, svc.clock.monotonic())
    trail = Trail()
    walk = Walk(svc, call, trail, "p")
    answer = await Failover(svc, call, trail, walk).answer(Embed())
    assert answer.value == [len("ok from m2"), 2.0] and answer.held is None
    assert answer.attempt.cand.scored.model.id == "b/m2" and answer.attempt.index == 1
    assert answer.attempt.cost == model("b/m2").cost(3, 0)
    assert adapter.called() == ["m1", "m1", "m2"] and r.clock.slept == [0.5]
    assert [(a.model, a.outcome, a.retry) for a in trail.attempts] == [
        ("a/m1", "unavailable", 0),
        ("a/m1", "unavailable", 1),
        ("b/m2", "ok", 0),
    ]
    assert [row.outcome for row in r.ledger.rows] == ["unavailable", "unavailable", "ok"]
    assert r.limiter.open == 0  # every lease settled
    models = r.engine.stats()["models"]
    assert models["a/m1"]["failures"] == 2 and models["b/m2"]["successes"] == 1

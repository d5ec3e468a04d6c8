"""One try as an async context manager: how the block ends decides how the try is closed
(settled, failed or aborted), and each way gives back what admission took, exactly once."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from engine.errors import UnavailableError
from engine.messages import Usage, parse_request
from engine.plan.values import BudgetPlan
from engine.runtime.call.admission import Admission, Skip
from engine.runtime.call.attempt import Attempt
from engine.runtime.call.data import Trail, call_data
from engine.runtime.call.walk import Walk
from engine.state.protocols import Lease

from ..doubles import Rig, ask, make_plan, model, rig, route


def setup() -> tuple[Rig, Admission, Walk]:
    plan = make_plan([model("a/m1")], [route("p", ["a/m1"], budget=BudgetPlan(daily_usd=5.0))])
    r = rig(plan)
    svc = r.engine._svc
    request = parse_request(ask())
    call = call_data(plan, request, svc.features(request), False, svc.clock.monotonic())
    trail = Trail()
    return r, Admission(svc, call, trail), Walk(svc, call, trail, "p")


def attempt(admission: Admission, walk: Walk) -> Attempt:
    _, cand = next(iter(walk))
    return Attempt(admission, cand, admission.call.request, 0, 0)


async def test_an_answered_try_is_settled() -> None:
    """Answered: the lease settled with the real usage, the reservation at the real cost."""
    r, admission, walk = setup()
    async with attempt(admission, walk) as a:
        assert r.limiter.open == 1 and len(r.budget.reserved) == 1
        assert r.engine._svc.strategies.inflight("a/m1") == 1
        a.answered(Usage(100, 50), None)
    assert r.limiter.settled == [("a#0", 100, 50)] and r.budget.reserved == {}
    assert r.budget.spent_usd["default"] == pytest.approx(a.cost or 0.0)
    assert r.engine._svc.strategies.inflight("a/m1") == 0
    assert [t.outcome for t in admission.trail.attempts] == ["ok"]
    assert [row.outcome for row in r.ledger.rows] == ["ok"]


async def test_a_provider_error_fails_the_try() -> None:
    """A ProviderError: the lease settled at its estimate, the reservation released, the
    error recorded and re-raised."""
    r, admission, walk = setup()
    with pytest.raises(UnavailableError):
        async with attempt(admission, walk):
            raise UnavailableError("down", status=503)
    assert r.limiter.open == 0 and r.budget.reserved == {} and r.budget.spent_usd == {}
    assert [(t.outcome, t.status) for t in admission.trail.attempts] == [("unavailable", 503)]
    assert [row.outcome for row in r.ledger.rows] == ["unavailable"]


@pytest.mark.parametrize("ending", ["cancelled", "no answer"])
async def test_a_try_without_a_verdict_is_aborted(ending: str) -> None:
    """Cancelled, or left without an answer: everything given back, nothing counted as a
    failure, the ledger told the try was cancelled."""
    r, admission, walk = setup()
    with (
        pytest.raises(asyncio.CancelledError) if ending == "cancelled" else contextlib.nullcontext()
    ):
        async with attempt(admission, walk):
            if ending == "cancelled":
                raise asyncio.CancelledError
    await asyncio.gather(*r.engine._svc.background)
    assert r.limiter.open == 0 and r.limiter.released == ["a#0"] and r.budget.reserved == {}
    assert admission.trail.attempts == [] and r.engine.stats()["models"] == {}
    assert [row.outcome for row in r.ledger.rows] == ["cancelled"]


async def test_a_refused_lease_gives_back_the_reservation_asked_beside_it() -> None:
    """The lease and the reservation are asked for together; a lease refused (local rate
    limit) leaves no hold on the budget."""
    r, admission, walk = setup()
    r.limiter.exhausted.add("a")
    _, cand = next(iter(walk))
    with pytest.raises(Skip):
        await admission.admit(cand, 0)
    await asyncio.gather(*r.engine._svc.background)
    assert [c.method for c in r.budget.calls] == ["reserve", "release"]
    assert r.budget.reserved == {} and r.limiter.open == 0
    assert [t.outcome for t in admission.trail.attempts] == ["rate_limited"]


async def test_a_call_cancelled_while_leasing_gives_back_the_reservation() -> None:
    """Cancelled while the lease waits: the hold asked beside it is released when it lands."""
    r, admission, walk = setup()
    gate = asyncio.Event()
    first_key = r.limiter.first_key
    granted = first_key.acquire

    async def slow(*args: object) -> Lease:
        await gate.wait()
        return await granted(*args)  # type: ignore[arg-type]

    first_key.acquire = slow  # type: ignore[method-assign]
    _, cand = next(iter(walk))
    task = asyncio.create_task(admission.admit(cand, 0))
    for _ in range(5):
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(5):
        await asyncio.sleep(0)
    await asyncio.gather(*r.engine._svc.background)
    assert [c.method for c in r.budget.calls] == ["reserve", "release"]
    assert r.budget.reserved == {}

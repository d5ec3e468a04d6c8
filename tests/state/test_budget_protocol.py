"""The BudgetStore protocol, run unchanged against every backend in backends.BUDGETS."""

from __future__ import annotations

import asyncio
import calendar
import tempfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import BudgetExceededError
from engine.state.protocols import BudgetStore, LedgerRow
from engine.testing.clock import FakeClock
from engine.testing.ledger import CapturingLedger

from .backends import BUDGETS, SERVER_CLOCK, Scratch, close_all


def at(*ymdh: int) -> float:
    return float(calendar.timegm((*ymdh, *(0,) * (6 - len(ymdh)))))


@pytest.fixture(params=sorted(BUDGETS))
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=sorted(set(BUDGETS) - SERVER_CLOCK))
def clocked(request: pytest.FixtureRequest) -> str:
    """A backend whose days follow the injected clock (for the tests that move it)."""
    return str(request.param)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=at(2026, 3, 14, 12))


async def _replicas(
    backend: str, tmp_path: Path, clock: FakeClock, request: pytest.FixtureRequest
) -> AsyncIterator[Sequence[BudgetStore]]:
    made = BUDGETS[backend](Scratch(tmp_path, clock, request), 2)
    yield made
    await close_all(made)


@pytest.fixture
async def stores(
    backend: str, tmp_path: Path, clock: FakeClock, request: pytest.FixtureRequest
) -> AsyncIterator[Sequence[BudgetStore]]:
    """Two replicas sharing one budget state."""
    async for made in _replicas(backend, tmp_path, clock, request):
        yield made


@pytest.fixture
async def clocked_stores(
    clocked: str, tmp_path: Path, clock: FakeClock, request: pytest.FixtureRequest
) -> AsyncIterator[Sequence[BudgetStore]]:
    """Two replicas of a backend that follows the injected clock."""
    async for made in _replicas(clocked, tmp_path, clock, request):
        yield made


async def test_a_reservation_counts_until_settled_at_the_real_cost(
    stores: Sequence[BudgetStore],
) -> None:
    """reserve holds the worst case (seen by every replica); settle books the real cost."""
    first, second = stores
    held = await first.reserve("ws", 0.40, daily_usd=1.0, monthly_usd=None)
    assert await second.spent("ws") == {"day": pytest.approx(0.40), "month": pytest.approx(0.40)}
    await first.settle(held, 0.10)
    assert (await second.spent("ws"))["day"] == pytest.approx(0.10)


async def test_settle_and_release_are_idempotent(stores: Sequence[BudgetStore]) -> None:
    """A second settle or a release after it changes nothing; a released hold costs nothing."""
    first, second = stores
    held = await first.reserve("ws", 0.30, daily_usd=1.0, monthly_usd=None)
    await first.settle(held, 0.20)
    await second.settle(held, 0.20)
    await second.release(held)
    dropped = await second.reserve("ws", 0.50, daily_usd=1.0, monthly_usd=None)
    await second.release(dropped)
    await first.release(dropped)
    assert (await first.spent("ws"))["day"] == pytest.approx(0.20)


async def test_a_reservation_past_a_limit_is_refused(stores: Sequence[BudgetStore]) -> None:
    """Spent + held + this call over the daily or monthly limit raises BudgetExceededError."""
    first, second = stores
    await first.reserve("ws", 0.70, daily_usd=1.0, monthly_usd=None)
    with pytest.raises(BudgetExceededError, match="daily"):
        await second.reserve("ws", 0.40, daily_usd=1.0, monthly_usd=None)
    with pytest.raises(BudgetExceededError, match="monthly"):
        await second.reserve("ws", 0.40, daily_usd=None, monthly_usd=1.0)
    await second.reserve("other", 0.90, daily_usd=1.0, monthly_usd=1.0)  # its own budget


async def test_a_new_utc_day_starts_from_zero_but_the_month_remembers(
    clocked_stores: Sequence[BudgetStore], clock: FakeClock
) -> None:
    """Spend rolls into the day and month it was reserved in."""
    first, second = clocked_stores
    await first.settle(await first.reserve("ws", 0.5, 1.0, 10.0), 0.5)
    clock.advance(86_400)
    assert await second.spent("ws") == {"day": 0.0, "month": pytest.approx(0.5)}


async def test_restore_brings_this_months_spend_in_once(
    clocked_stores: Sequence[BudgetStore], clock: FakeClock
) -> None:
    """restore reads the ledger's month so far (not last month's, not unknown costs); a
    second restore, by the same store or a replica, adds nothing."""
    ledger = CapturingLedger()
    for ts, cost in ((at(2026, 3, 14, 9), 0.5), (at(2026, 3, 1), 2.0), (at(2026, 2, 27), 7.0)):
        ledger.record(LedgerRow(ts, "ws", "p", "openai", "openai/x", 1, 1, cost, 1.0, "ok", 0))
    ledger.record(LedgerRow(at(2026, 3, 14, 9), "ws", "p", "x", "x/y", 1, 1, None, 1.0, "ok", 0))
    first, second = clocked_stores
    await first.restore(ledger)
    await first.restore(ledger)
    await second.restore(ledger)
    assert await second.spent("ws") == {"day": pytest.approx(0.5), "month": pytest.approx(2.5)}
    with pytest.raises(BudgetExceededError):
        await second.reserve("ws", 0.6, daily_usd=1.0, monthly_usd=None)


# One scripted task: (replica, reserve amount, fraction really spent or None to release, yields).
_tasks = st.lists(
    st.tuples(
        st.integers(0, 2),
        st.floats(0.0, 0.6, allow_nan=False),
        st.one_of(st.none(), st.floats(0.0, 1.0, allow_nan=False)),
        st.integers(0, 3),
    ),
    min_size=1,
    max_size=25,
)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(tasks=_tasks, daily=st.floats(0.1, 3.0), monthly=st.floats(0.1, 5.0))
def test_concurrent_reservations_across_replicas_never_overspend(
    backend: str,
    request: pytest.FixtureRequest,
    tasks: list[tuple[int, float, float | None, int]],
    daily: float,
    monthly: float,
) -> None:
    """Tasks on three replicas reserving, settling and releasing at once never take spent +
    reserved over a limit, and what is left afterwards is exactly what was settled."""

    async def scenario(scratch: Path) -> None:
        replicas = BUDGETS[backend](Scratch(scratch, FakeClock(), request), 3)
        settled: list[float] = []

        async def check() -> None:
            spent = await replicas[0].spent("ws")
            assert spent["day"] <= daily + 1e-9 and spent["month"] <= monthly + 1e-9

        async def one(replica: int, amount: float, fraction: float | None, yields: int) -> None:
            store = replicas[replica]
            try:
                held = await store.reserve("ws", amount, daily, monthly)
            except BudgetExceededError:
                return
            for _ in range(yields):
                await asyncio.sleep(0)
                await check()
            if fraction is None:
                await store.release(held)
            else:
                await store.settle(held, amount * fraction)
                settled.append(amount * fraction)

        try:
            await asyncio.gather(*(one(*t) for t in tasks))
            await check()
            left = (await replicas[1].spent("ws"))["day"]
            assert left == pytest.approx(sum(settled), abs=1e-9 * len(tasks))
        finally:
            await close_all(replicas)

    with tempfile.TemporaryDirectory() as scratch:
        asyncio.run(scenario(Path(scratch)))

"""InProcessBudgetStore: reserve/settle/release, UTC day and month periods, restore, no overspend."""

from __future__ import annotations

import asyncio
import calendar
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import BudgetExceededError
from engine.state.budget import InProcessBudgetStore, utc_day, utc_month
from engine.state.ledger import SQLiteLedger
from engine.state.protocols import LedgerRow
from engine.testing.clock import FakeClock


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> float:
    """Unix time of a UTC wall-clock moment."""
    return float(calendar.timegm((year, month, day, hour, minute, 0, 0, 0, 0)))


async def test_reserve_within_limit_counts_as_spent(clock: FakeClock) -> None:
    """An open reservation counts towards the day and the month until settled."""
    store = InProcessBudgetStore(clock)
    await store.reserve("ws", 0.40, daily_usd=1.0, monthly_usd=10.0)
    assert await store.spent("ws") == {"day": pytest.approx(0.40), "month": pytest.approx(0.40)}
    assert store.reserved("ws") == {"day": pytest.approx(0.40), "month": pytest.approx(0.40)}


async def test_reserve_over_daily_limit_is_refused(clock: FakeClock) -> None:
    """A reservation that would pass the daily limit raises and books nothing."""
    store = InProcessBudgetStore(clock)
    await store.reserve("ws", 0.70, daily_usd=1.0, monthly_usd=None)
    with pytest.raises(BudgetExceededError, match="daily budget") as err:
        await store.reserve("ws", 0.40, daily_usd=1.0, monthly_usd=None)
    assert "'ws'" in str(err.value)
    assert (await store.spent("ws"))["day"] == pytest.approx(0.70)


async def test_reserve_over_monthly_limit_is_refused(clock: FakeClock) -> None:
    """The monthly limit is checked too, independently of the daily one."""
    store = InProcessBudgetStore(clock)
    await store.reserve("ws", 3.0, daily_usd=None, monthly_usd=5.0)
    with pytest.raises(BudgetExceededError, match="monthly budget"):
        await store.reserve("ws", 2.5, daily_usd=100.0, monthly_usd=5.0)


async def test_workspaces_are_independent(clock: FakeClock) -> None:
    """One workspace's spend never counts against another's limit."""
    store = InProcessBudgetStore(clock)
    await store.reserve("a", 1.0, daily_usd=1.0, monthly_usd=None)
    await store.reserve("b", 1.0, daily_usd=1.0, monthly_usd=None)
    assert (await store.spent("b"))["day"] == pytest.approx(1.0)


async def test_settle_replaces_the_worst_case_with_real_cost(clock: FakeClock) -> None:
    """After settle, the workspace has spent the real cost and nothing is held."""
    store = InProcessBudgetStore(clock)
    res = await store.reserve("ws", 0.90, daily_usd=1.0, monthly_usd=None)
    await store.settle(res, 0.10)
    assert (await store.spent("ws"))["day"] == pytest.approx(0.10)
    assert store.reserved("ws")["day"] == 0.0
    await store.reserve("ws", 0.85, daily_usd=1.0, monthly_usd=None)


async def test_release_gives_the_reservation_back(clock: FakeClock) -> None:
    """A failed or cancelled call releases its hold; settle after release changes nothing."""
    store = InProcessBudgetStore(clock)
    res = await store.reserve("ws", 0.90, daily_usd=1.0, monthly_usd=None)
    await store.release(res)
    await store.settle(res, 0.50)
    await store.release(res)
    assert await store.spent("ws") == {"day": 0.0, "month": 0.0}


async def test_negative_or_nan_amounts_are_rejected(clock: FakeClock) -> None:
    """A budget amount must be a finite, non-negative number."""
    store = InProcessBudgetStore(clock)
    with pytest.raises(ValueError, match="finite number"):
        await store.reserve("ws", -1.0, daily_usd=1.0, monthly_usd=None)
    with pytest.raises(ValueError, match="finite number"):
        await store.reserve("ws", float("nan"), daily_usd=1.0, monthly_usd=None)


async def test_day_rolls_over_at_utc_midnight() -> None:
    """Daily spend starts from zero on the next UTC day while the month keeps counting."""
    clock = FakeClock(start=at(2026, 3, 14, 23, 59))
    store = InProcessBudgetStore(clock)
    await store.settle(await store.reserve("ws", 1.0, 1.0, 10.0), 1.0)
    with pytest.raises(BudgetExceededError):
        await store.reserve("ws", 0.5, 1.0, 10.0)
    clock.advance(120)
    await store.reserve("ws", 0.5, 1.0, 10.0)
    assert await store.spent("ws") == {"day": pytest.approx(0.5), "month": pytest.approx(1.5)}


async def test_month_rolls_over_on_the_first() -> None:
    """Monthly spend starts from zero on the 1st (UTC), including across a year end."""
    clock = FakeClock(start=at(2026, 12, 31, 23, 30))
    store = InProcessBudgetStore(clock)
    await store.settle(await store.reserve("ws", 5.0, None, 5.0), 5.0)
    with pytest.raises(BudgetExceededError):
        await store.reserve("ws", 0.01, None, 5.0)
    clock.advance(3600)
    assert utc_month(clock.time()) == "2027-01"
    await store.reserve("ws", 4.0, None, 5.0)
    assert (await store.spent("ws"))["month"] == pytest.approx(4.0)


async def test_reservation_settles_into_the_day_it_was_made() -> None:
    """A call reserved before midnight and settled after spends the old day's budget."""
    clock = FakeClock(start=at(2026, 3, 14, 23, 59))
    store = InProcessBudgetStore(clock)
    res = await store.reserve("ws", 0.8, 1.0, None)
    clock.advance(120)
    await store.settle(res, 0.6)
    assert (await store.spent("ws"))["day"] == 0.0
    clock.advance(-120)
    assert (await store.spent("ws"))["day"] == pytest.approx(0.6)


async def test_restore_rebuilds_day_and_month_from_daily_rows() -> None:
    """Restored ledger totals count towards today's and this month's limits."""
    clock = FakeClock(start=at(2026, 3, 14, 12))
    store = InProcessBudgetStore(clock)
    store.add_settled(
        [("ws", "2026-03-14", 0.25), ("ws", "2026-03-02", 1.0), ("ws", "2026-02-28", 9.0)]
    )
    assert await store.spent("ws") == {"day": pytest.approx(0.25), "month": pytest.approx(1.25)}
    with pytest.raises(BudgetExceededError):
        await store.reserve("ws", 0.8, daily_usd=1.0, monthly_usd=None)


async def test_from_ledger_restores_month_to_date(tmp_path: Path) -> None:
    """A store built from the ledger sees this month's recorded cost, and not last month's."""
    clock = FakeClock(start=at(2026, 3, 14, 12))
    ledger = SQLiteLedger(tmp_path / "ledger.sqlite3", clock)
    for ts, cost in ((at(2026, 3, 14, 9), 0.5), (at(2026, 3, 1, 0), 2.0), (at(2026, 2, 27), 7.0)):
        ledger.record(LedgerRow(ts, "ws", "p", "openai", "openai/x", 1, 1, cost, 1.0, "ok", 0))
    ledger.record(LedgerRow(at(2026, 3, 14, 9), "ws", "p", "x", "x/y", 1, 1, None, 1.0, "ok", 0))
    await ledger.flush()
    store = InProcessBudgetStore(clock)
    await store.restore(ledger)
    await store.restore(ledger)  # once per store: a second restore adds nothing
    await ledger.aclose()
    assert await store.spent("ws") == {"day": pytest.approx(0.5), "month": pytest.approx(2.5)}


def test_period_names_are_utc() -> None:
    """Days and months are named in UTC, whatever the local time zone."""
    assert utc_day(at(2026, 3, 14, 23, 59)) == "2026-03-14"
    assert utc_month(at(2026, 3, 1)) == "2026-03"


# One scripted task: (reserve amount, fraction of it really spent or None to release, yields).
_tasks = st.lists(
    st.tuples(
        st.floats(0.0, 0.6, allow_nan=False),
        st.one_of(st.none(), st.floats(0.0, 1.0, allow_nan=False)),
        st.integers(0, 3),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(tasks=_tasks, daily=st.floats(0.1, 3.0), monthly=st.floats(0.1, 5.0))
def test_concurrent_requests_never_overspend(
    tasks: list[tuple[float, float | None, int]], daily: float, monthly: float
) -> None:
    """Many tasks reserving and settling at once never take spent + reserved over a limit."""

    async def scenario() -> None:
        store = InProcessBudgetStore(FakeClock())
        settled: list[float] = []

        async def check() -> None:
            spent = await store.spent("ws")
            assert spent["day"] <= daily + 1e-9
            assert spent["month"] <= monthly + 1e-9

        async def one(amount: float, fraction: float | None, yields: int) -> None:
            try:
                res = await store.reserve("ws", amount, daily, monthly)
            except BudgetExceededError:
                await check()
                return
            await check()
            for _ in range(yields):
                await asyncio.sleep(0)
                await check()
            if fraction is None:
                await store.release(res)
            else:
                await store.settle(res, amount * fraction)
                settled.append(amount * fraction)
            await check()

        await asyncio.gather(*(one(*t) for t in tasks))
        assert store.reserved("ws")["day"] == 0.0
        assert (await store.spent("ws"))["day"] == pytest.approx(
            sum(settled), abs=1e-9 * len(tasks)
        )

    asyncio.run(scenario())

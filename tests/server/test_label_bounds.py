"""Client-chosen names never become unbounded state: metric labels come from the config, and
budget state per workspace name is bounded (issue 14)."""

from __future__ import annotations

import calendar

import pytest

from engine.errors import BudgetExceededError
from engine.secrets import Secret
from engine.server.settings import ApiKey, ServerSettings
from engine.state.budget import OVERFLOW, InProcessBudgetStore
from engine.testing.clock import FakeClock
from tests.server.conftest import serving
from tests.server.standin import StandInEngine

MSG = [{"role": "user", "content": "hi"}]
KEYS = (ApiKey(id="team", secret=Secret("sk-client-key-000000000000")),)


async def test_invented_policy_headers_add_no_metric_series() -> None:
    """300 unauthenticated requests, each naming a new `x-engine-policy`, are counted under
    one `unknown` label: /metrics holds no invented name."""
    async with (
        serving(StandInEngine(), ServerSettings(api_keys=KEYS)) as running,
        running.http() as http,
    ):
        for i in range(300):
            resp = await http.post(
                "/v1/chat/completions",
                json={"model": "fast", "messages": MSG},
                headers={"x-engine-policy": f"invented-{i}"},
            )
            assert resp.status_code == 401
        scrape = (await http.get("/metrics")).text
    assert "invented-" not in scrape
    series = 'engine_requests_total{policy="unknown",provider="",status="401",stream="false"}'
    assert f"{series} 300.0" in scrape


def at(year: int, month: int, day: int) -> float:
    return float(calendar.timegm((year, month, day, 12, 0, 0, 0, 0, 0)))


async def test_workspace_names_beyond_the_cap_share_one_bucket() -> None:
    """Past `max_workspaces`, new names share OVERFLOW under the same limit: tracking stays
    bounded and the shared bucket refuses what the limit would not allow one name."""
    store = InProcessBudgetStore(FakeClock(at(2026, 3, 10)), max_workspaces=100)
    for i in range(1000):
        r = await store.reserve(f"ws-{i}", 0.01, daily_usd=5.0, monthly_usd=None)
        await store.settle(r, 0.004)
    assert store.tracked() == 101
    assert (await store.spent("ws-999"))["day"] == pytest.approx(900 * 0.004)
    assert await store.spent(OVERFLOW) == await store.spent("someone-new")
    with pytest.raises(BudgetExceededError):
        await store.reserve("ws-5000", 2.0, daily_usd=5.0, monthly_usd=None)
    assert (await store.spent("ws-7"))["day"] == pytest.approx(
        0.004
    )  # tracked names keep their own


async def test_free_calls_and_past_days_leave_no_entries() -> None:
    """A call settled at $0 (or released) leaves nothing behind, and a new UTC day drops the
    past day's entries while the month's stay."""
    clock = FakeClock(at(2026, 3, 10))
    store = InProcessBudgetStore(clock)
    for i in range(500):
        r = await store.reserve(f"free-{i}", 0.01, daily_usd=1.0, monthly_usd=None)
        await store.settle(r, 0.0)
        await store.release(await store.reserve(f"gone-{i}", 0.01, 1.0, None))
    assert store.tracked() == 0
    await store.settle(await store.reserve("paid", 0.5, 1.0, 10.0), 0.25)
    clock.advance(86_400)
    await store.release(await store.reserve("other", 0.01, 1.0, 10.0))
    assert await store.spent("paid") == {"day": 0.0, "month": pytest.approx(0.25)}
    assert store.tracked() == 1

"""The Ledger protocol, run unchanged against every backend in backends.LEDGERS."""

from __future__ import annotations

import calendar
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engine.state.protocols import Ledger, LedgerRow
from engine.testing.clock import FakeClock

from .backends import LEDGERS, Scratch


def at(*ymdh: int) -> float:
    return float(calendar.timegm((*ymdh, *(0,) * (6 - len(ymdh)))))


DAY1, DAY2 = at(2026, 3, 13, 10), at(2026, 3, 14, 10)


def row(
    ts: float, workspace: str | None, model: str, cost: float | None, **kw: object
) -> LedgerRow:
    provider = model.partition("/")[0]
    fields: dict[str, object] = {"outcome": "ok", "cached": False} | kw
    return LedgerRow(
        ts, workspace, "default", provider, model, 100, 20, cost, 5.0,
        str(fields["outcome"]), 0, "r", bool(fields["cached"]),
    )  # fmt: skip


@pytest.fixture(params=sorted(LEDGERS))
async def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Ledger]:
    made = LEDGERS[request.param](Scratch(tmp_path, FakeClock(), request), FakeClock())
    yield made
    await made.aclose()


async def fill(ledger: Ledger) -> None:
    for r in (
        row(DAY1, "acme", "openai/gpt", 0.50),
        row(DAY2, "acme", "openai/gpt", 0.25, cached=True),
        row(DAY2, "acme", "anthropic/claude", None, outcome="unavailable"),
        row(DAY2, "other", "openai/gpt", 1.00),
        row(DAY2, None, "openai/gpt", 3.00),
    ):
        ledger.record(r)
    await ledger.flush()


async def test_totals_group_by_any_column_and_never_hide_an_unknown_cost(ledger: Ledger) -> None:
    """Per model: attempts, ok, cached, tokens, known cost, and unknown costs counted apart."""
    await fill(ledger)
    by_model = {r["model"]: dict(r) for r in await ledger.totals("acme", 0, "model")}
    assert by_model["openai/gpt"] == {
        "model": "openai/gpt", "attempts": 2, "ok": 2, "cached": 1, "input_tokens": 200,
        "output_tokens": 40, "cache_read_tokens": 0, "cache_write_tokens": 0,
        "reasoning_tokens": 0, "cost_usd": pytest.approx(0.75), "unknown_cost": 0,
    }  # fmt: skip
    assert by_model["anthropic/claude"]["unknown_cost"] == 1
    assert by_model["anthropic/claude"]["cost_usd"] == 0.0
    providers = [r["provider"] for r in await ledger.totals(None, 0, "provider")]
    assert providers == ["openai", "anthropic"]  # most expensive first


async def test_queries_filter_by_workspace_and_time(ledger: Ledger) -> None:
    """`since` drops older rows; a workspace keeps only its own."""
    await fill(ledger)
    assert (await ledger.totals("acme", DAY2, "model"))[0]["attempts"] == 1
    assert await ledger.totals("nobody", 0, "model") == []
    days = [(d["day"], d["attempts"]) for d in await ledger.daily("acme", 0)]
    assert days == [("2026-03-13", 1), ("2026-03-14", 2)]


async def test_spend_since_is_known_cost_per_workspace_and_utc_day(ledger: Ledger) -> None:
    """What budgets restore from: named workspaces, known costs, one figure per day."""
    await fill(ledger)
    spend = [(w, d, pytest.approx(usd)) for w, d, usd in await ledger.spend_since(0)]
    assert spend == [
        ("acme", "2026-03-13", 0.50),
        ("acme", "2026-03-14", 0.25),
        ("other", "2026-03-14", 1.00),
    ]
    assert await ledger.spend_since(DAY2 + 1) == []


async def test_an_unknown_grouping_is_a_value_error(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="cannot group by 'prompt'"):
        await ledger.totals(None, 0, "prompt")


async def test_a_row_after_close_is_dropped_without_raising(ledger: Ledger) -> None:
    """The ledger is a record of traffic, never a gate on it."""
    await ledger.aclose()
    ledger.record(row(DAY2, "acme", "openai/gpt", 0.1))
    await ledger.aclose()  # idempotent

"""Budget arithmetic every budget store shares: UTC periods, integer nano-dollars, the check.

Money is kept as integer nano-dollars (1e-9 USD): sums of many floats drift, and a budget
check that must never be wrong by a rounding error wants exact arithmetic. Reservations
round up (`nanos_up`), limits round down (`check_limit`), so rounding can only ever err on
the side of not spending. One `check_limit` for every store means their refusals agree to
the nano-dollar and read the same.

A budget's day and month are UTC, as are the ledger's (`utc_day`, `day_start`).
"""

from __future__ import annotations

import calendar
import math
import time

from engine.errors import BudgetExceededError

NANO = 1_000_000_000  # nano-dollars per USD
#: The period name of an all-time total (kept by stores built with `totals=True`).
ALL = "all"


def utc_day(ts: float) -> str:
    """'YYYY-MM-DD' of a Unix time in UTC: the budget's (and the ledger's) day."""
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


def utc_month(ts: float) -> str:
    """'YYYY-MM' of a Unix time in UTC."""
    return time.strftime("%Y-%m", time.gmtime(ts))


def day_start(ts: float) -> float:
    """Unix time of 00:00 UTC on `ts`'s day: where the budget's (and the ledger's) day begins."""
    t = time.gmtime(ts)
    return float(calendar.timegm((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0, 0, 0, 0)))


def month_start(ts: float) -> float:
    """Unix time of 00:00 UTC on the first day of `ts`'s month."""
    t = time.gmtime(ts)
    return float(calendar.timegm((t.tm_year, t.tm_mon, 1, 0, 0, 0, 0, 0, 0)))


def nanos_up(usd: float) -> int:
    """A reservation in nano-dollars, rounded up."""
    return math.ceil(usd * NANO)


def nanos(usd: float) -> int:
    """A settled cost in nano-dollars, rounded to the nearest."""
    return round(usd * NANO)


def check_amount(usd: float) -> None:
    """Refuse an amount no budget can book (negative, NaN, infinite)."""
    if not (math.isfinite(usd) and usd >= 0):
        raise ValueError(f"a budget amount must be a finite number >= 0, got {usd!r}")


def check_totals(kept: bool, total_usd: float | None) -> None:
    """Refuse a total limit on a store that keeps no totals (it could not enforce it)."""
    if total_usd is not None and not kept:
        raise ValueError("this budget store keeps no all-time totals (build it with totals=True)")


def check_limit(
    workspace: str,
    period: str,
    name: str,
    limit: float,
    spent: int,
    held: int,
    amount: int,
    scope: str = "workspace",
) -> None:
    """Raise BudgetExceededError when spent + held + amount (nano-USD) would pass `limit`.
    `scope` names what `workspace` is ("workspace", "API key") in the message."""
    if spent + held + amount > math.floor(limit * NANO):
        where = "" if period == ALL else f" ({period})"
        raise BudgetExceededError(
            f"{scope} {workspace!r} {name} budget ${limit:.4f}{where} would be "
            f"exceeded: spent ${spent / NANO:.4f}, reserved ${held / NANO:.4f}, "
            f"this call up to ${amount / NANO:.4f}"
        )

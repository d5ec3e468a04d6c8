"""Prices for the time of each call, and the one cost formula every part of the engine uses.

Why one leaf module: the compiler ranks by price, the runtime reserves and settles budgets
and the ledger books cost; if each computed cost its own way they would disagree. Here a
model's prices are read once from the `genai-prices` data package into a `PriceSchedule`
(plain floats: every dated price change and time-of-day window the package knows, with
cache-read, cache-write and long-context tiers), and `cost` is the only formula:

    cost = (uncached input x input + cache reads x cache_read + cache writes x cache_write
            + output x output) / 1e6          all at the tier the total input falls into

`input_tokens` counts the whole prompt, cached parts included (OpenAI's convention; the
adapters normalise Anthropic's and Gemini's to it); `output_tokens` includes reasoning
tokens, which every provider bills at the output price.

A schedule resolves the rates in force at a call's time; the day's table is computed once
per UTC day (time-of-day windows such as DeepSeek's off-peak prices are checked per call).
`prices_as_of` pins every lookup to one instant, so tests and reproducible plans never
drift as the package learns of new prices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from functools import cache
from typing import Any

from engine.frozen import builder

__all__ = [
    "CostBreakdown",
    "PriceSchedule",
    "Rates",
    "breakdown",
    "cost",
    "parse_as_of",
    "schedule_for",
]

#: Our provider ids whose genai-prices id differs.
PROVIDER_ALIASES = {"gemini": "google"}
_DAY = 86400.0


@dataclass(frozen=True, slots=True)
class Rates:
    """USD per 1M tokens. `tiers`: (threshold, rates) pairs; a prompt of more than
    `threshold` input tokens pays that tier's rates on every token (the providers' cliff)."""

    input: float
    output: float
    cache_read: float
    cache_write: float
    tiers: tuple[tuple[int, Rates], ...] = ()

    def for_input(self, input_tokens: int) -> Rates:
        """The rates a prompt of `input_tokens` pays (its long-context tier, if any)."""
        chosen = self
        for threshold, rates in self.tiers:
            if input_tokens > threshold:
                chosen = rates
        return chosen


@dataclass(frozen=True, slots=True)
class CostBreakdown:
    """What one call cost, per kind of token (USD)."""

    input_usd: float
    cache_read_usd: float
    cache_write_usd: float
    output_usd: float

    @property
    def total_usd(self) -> float:
        return self.input_usd + self.cache_read_usd + self.cache_write_usd + self.output_usd


#: One per priced try (engine/frozen.py: a frozen dataclass's own __init__ costs ~4x more).
_cost_breakdown = builder(CostBreakdown)


def breakdown(
    rates: Rates, input_tokens: int, output_tokens: int, cache_read: int = 0, cache_write: int = 0
) -> CostBreakdown:
    """What a call of this usage cost at these rates, split by kind of token: the cost
    formula (see the module docstring), the only place it is written."""
    r = rates.for_input(input_tokens) if rates.tiers else rates
    input_tokens = input_tokens if input_tokens > 0 else 0
    cache_read = min(cache_read, input_tokens) if cache_read > 0 else 0
    cache_write = min(cache_write, input_tokens - cache_read) if cache_write > 0 else 0
    return _cost_breakdown(
        input_usd=(input_tokens - cache_read - cache_write) * r.input / 1e6,
        cache_read_usd=cache_read * r.cache_read / 1e6,
        cache_write_usd=cache_write * r.cache_write / 1e6,
        output_usd=(output_tokens if output_tokens > 0 else 0) * r.output / 1e6,
    )


def cost(
    rates: Rates, input_tokens: int, output_tokens: int, cache_read: int = 0, cache_write: int = 0
) -> float:
    """USD for a call of this usage at these rates."""
    return breakdown(rates, input_tokens, output_tokens, cache_read, cache_write).total_usd


# -- schedules ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Period:
    """One of genai-prices' conditional prices: from a UTC day on, or in a daily window."""

    rates: Rates
    start_day: int | None = None  # date.toordinal()
    window: tuple[float, float] | None = None  # seconds since UTC midnight, [start, end)

    def covers_day(self, day: int) -> bool:
        return self.start_day is None or day >= self.start_day

    def covers_second(self, second: float) -> bool:
        assert self.window is not None
        start, end = self.window
        if end < start:  # the window crosses midnight
            return second >= start or second < end
        return start <= second < end


class PriceSchedule:
    """A model's prices over time; `rates_at(unix_ts)` gives the ones in force then."""

    __slots__ = ("_day", "_flat", "_periods", "_pinned", "_table")

    def __init__(self, periods: tuple[_Period, ...], pinned_ts: float | None = None) -> None:
        self._periods = periods
        self._pinned = pinned_ts
        # One price without a daily window is in force at every instant (the first period
        # is also the fallback before its start day): most models, declared prices too.
        self._flat = periods[0].rates if len(periods) == 1 and not periods[0].window else None
        self._day = -1
        self._table: tuple[tuple[_Period, ...], Rates] = ((), periods[0].rates)

    @classmethod
    def flat(cls, rates: Rates) -> PriceSchedule:
        """Prices that never change (declared in models.yaml, or a local model's zero)."""
        return cls((_Period(rates),))

    def pinned(self, ts: float | None) -> PriceSchedule:
        """This schedule, every lookup answered as of `ts` (None: the call's own time)."""
        return PriceSchedule(self._periods, ts)

    def with_rates(self, input_price: float | None, output_price: float | None) -> PriceSchedule:
        """Declared prices win over the package's: they replace input and output everywhere."""
        if input_price is None and output_price is None:
            return self
        periods = tuple(
            _Period(_override(p.rates, input_price, output_price), p.start_day, p.window)
            for p in self._periods
        )
        return PriceSchedule(periods, self._pinned)

    def rates_at(self, ts: float) -> Rates:
        """The rates in force at unix time `ts` (or at the pinned instant)."""
        if self._flat is not None:  # no day table to look up (~1k instructions a call)
            return self._flat
        if self._pinned is not None:
            ts = self._pinned
        day = int(ts // _DAY)
        if day != self._day:  # the day's table, computed once per UTC day
            self._table = self._day_table(day + date(1970, 1, 1).toordinal())
            self._day = day
        windows, base = self._table
        if windows:
            second = ts - day * _DAY
            for period in windows:
                if period.covers_second(second):
                    return period.rates
        return base

    def _day_table(self, ordinal: int) -> tuple[tuple[_Period, ...], Rates]:
        # genai-prices: the last active conditional price wins, else the first one.
        windows: list[_Period] = []
        for period in reversed(self._periods):
            if period.window is not None:
                windows.append(period)
            elif period.covers_day(ordinal):
                return tuple(windows), period.rates
        return tuple(windows), self._periods[0].rates


def _override(rates: Rates, input_price: float | None, output_price: float | None) -> Rates:
    """Declared prices are flat (no tiers); cache prices keep the package's ratio to input."""
    if input_price is None:
        return Rates(rates.input, output_price if output_price is not None else rates.output,
                     rates.cache_read, rates.cache_write)  # fmt: skip
    ratio_read = rates.cache_read / rates.input if rates.input else 1.0
    ratio_write = rates.cache_write / rates.input if rates.input else 1.0
    return Rates(
        input_price,
        rates.output if output_price is None else output_price,
        input_price * ratio_read,
        input_price * ratio_write,
    )


# -- reading genai-prices ------------------------------------------------------------------


def parse_as_of(value: str | date | datetime | None) -> float | None:
    """`prices_as_of` (a date or an ISO timestamp; a date means its UTC midnight) as unix time."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value) if "T" in value else date.fromisoformat(value)
    if not isinstance(value, datetime):
        value = datetime.combine(value, time(0), tzinfo=UTC)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


@cache
def schedule_for(provider: str, model: str) -> tuple[PriceSchedule | None, int | None]:
    """What genai-prices knows of `model` at `provider`: its schedule and context window.

    A model the package does not know resolves to (None, None), never to a zero price."""
    from genai_prices import data_snapshot  # loaded once, only when a plan is compiled

    snapshot = data_snapshot.get_snapshot()
    try:
        pid = PROVIDER_ALIASES.get(provider, provider)
        _, info = snapshot.find_provider_model(model, None, pid, None)
    except LookupError:
        return None, None
    prices = info.prices if isinstance(info.prices, list) else None
    entries: list[tuple[Any, Any]] = (
        [(c.constraint, c.prices) for c in prices] if prices is not None else [(None, info.prices)]
    )
    periods = []
    for constraint, model_price in entries:
        rates = _rates(model_price)
        if rates is None:
            return None, info.context_window
        periods.append(_period(constraint, rates))
    return PriceSchedule(tuple(periods)), info.context_window


def _period(constraint: Any, rates: Rates) -> _Period:
    start = getattr(constraint, "start_date", None)
    if start is not None:
        return _Period(rates, start_day=start.toordinal())
    begin, end = getattr(constraint, "start_time", None), getattr(constraint, "end_time", None)
    if begin is not None and end is not None:
        return _Period(rates, window=(_seconds(begin), _seconds(end)))
    return _Period(rates)


def _seconds(t: time) -> float:
    if t.tzinfo is not None:
        t = datetime.combine(date(1970, 1, 1), t).astimezone(UTC).time()
    return t.hour * 3600.0 + t.minute * 60.0 + t.second + t.microsecond / 1e6


def _rates(model_price: Any) -> Rates | None:
    """A genai-prices ModelPrice as Rates (tiers merged across the four token prices)."""
    raw: dict[str, Any] = {
        key: getattr(model_price, f"{key}_mtok", None)
        for key in ("input", "output", "cache_read", "cache_write")
    }
    if raw["input"] is None or raw["output"] is None:
        return None
    thresholds = sorted({t.start for v in raw.values() if v is not None for t in _tiers(v)})

    def at(key: str, tokens: int) -> float:
        value = raw[key] if raw[key] is not None else raw["input"]
        price = getattr(value, "base", value)
        for tier in _tiers(value):
            if tokens > tier.start:
                price = tier.price
        return _float(price)

    def level(tokens: int) -> Rates:
        return Rates(at("input", tokens), at("output", tokens), at("cache_read", tokens),
                     at("cache_write", tokens))  # fmt: skip

    base = level(0)
    tiers = tuple((t, level(t + 1)) for t in thresholds)
    return Rates(base.input, base.output, base.cache_read, base.cache_write, tiers)


def _tiers(value: Any) -> list[Any]:
    return list(getattr(value, "tiers", None) or [])


def _float(value: Any) -> float:
    out = float(value)
    if not math.isfinite(out) or out < 0:
        raise ValueError(f"bad price {value!r}")
    return out

"""Prices for the time of each call: the compiled schedules agree with genai-prices' own
calculation for every model it knows, on every kind of token, at any instant."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from genai_prices import Usage as GenaiUsage
from genai_prices import data_snapshot

from engine.pricing import PriceSchedule, Rates, breakdown, cost, parse_as_of, schedule_for

#: Instants that fall in and out of the package's dated price changes and DeepSeek's
#: time-of-day windows.
INSTANTS = [
    datetime(2025, 3, 1, 12, tzinfo=UTC),
    datetime(2026, 1, 1, 0, 0, tzinfo=UTC),
    datetime(2026, 4, 1, 2, 30, tzinfo=UTC),
    datetime(2026, 9, 11, 7, 15, tzinfo=UTC),
    datetime(2026, 12, 1, 17, 0, tzinfo=UTC),
]


def _models() -> list[tuple[str, str]]:
    snapshot = data_snapshot.get_snapshot()
    found = []
    for provider in snapshot.providers:
        if provider.id not in {"openai", "anthropic", "google", "mistral", "deepseek", "groq"}:
            continue
        found += [(provider.id, m.id) for m in provider.models]
    return found


def _genai_total(provider: str, model: str, usage: dict[str, int], when: datetime) -> Decimal:
    snapshot = data_snapshot.get_snapshot()
    found, info = snapshot.find_provider_model(model, None, provider, None)
    return info.calc_price(GenaiUsage(**usage), found, genai_request_timestamp=when).total_price


def test_every_known_model_is_priced_as_genai_prices_prices_it() -> None:
    """Our one formula over the compiled schedule equals genai-prices' calc_price (cache
    reads, cache writes, long-context tiers, dated changes and time-of-day windows)."""
    rng = random.Random(12)
    checked = 0
    for provider, model in _models():
        schedule, _ = schedule_for(provider, model)
        if schedule is None:
            continue
        for when in INSTANTS:
            inp = rng.choice([0, 100, 5_000, 199_999, 200_001, 300_000])
            read = rng.randint(0, inp)
            write = rng.randint(0, inp - read)
            out = rng.choice([0, 10, 4_000])
            usage = {
                "input_tokens": inp,
                "cache_read_tokens": read,
                "cache_write_tokens": write,
                "output_tokens": out,
            }
            want = _genai_total(provider, model, usage, when)
            got = cost(schedule.rates_at(when.timestamp()), inp, out, read, write)
            assert got == pytest.approx(float(want), rel=1e-9, abs=1e-15), (model, when, usage)
            checked += 1
    assert checked > 300  # the check covered the package, not a handful of models


def test_cache_reads_are_billed_at_the_cache_price() -> None:
    """100 input + 1,000 cache-read + 10 output tokens on Claude Haiku 4.5 cost $0.00025,
    not the $0.00115 of billing every prompt token at the input price."""
    schedule, _ = schedule_for("anthropic", "claude-haiku-4-5")
    assert schedule is not None
    rates = schedule.rates_at(parse_as_of("2026-12-01") or 0)
    assert cost(rates, 1_100, 10, cache_read=1_000) == pytest.approx(0.00025)
    parts = breakdown(rates, 1_100, 10, cache_read=1_000)
    assert (parts.input_usd, parts.cache_read_usd, parts.output_usd) == pytest.approx(
        (0.0001, 0.0001, 0.00005)
    )


def test_prices_follow_the_calendar_and_the_clock() -> None:
    """Mistral Small's March 2026 rise and DeepSeek's peak window apply when in force."""
    mistral, _ = schedule_for("mistral", "mistral-small-latest")
    deepseek, _ = schedule_for("deepseek", "deepseek-v4-flash")
    assert mistral is not None and deepseek is not None
    jan, dec = parse_as_of("2026-01-01") or 0, parse_as_of("2026-12-01") or 0
    assert cost(mistral.rates_at(jan), 1_000_000, 1_000_000) == pytest.approx(0.40)
    assert cost(mistral.rates_at(dec), 1_000_000, 1_000_000) == pytest.approx(0.75)
    off_peak = deepseek.rates_at(dec + 12 * 3600).output
    peak = deepseek.rates_at(dec + 7 * 3600).output
    assert (off_peak, peak) == (0.6, 1.2)


def test_a_pinned_schedule_ignores_the_call_time() -> None:
    """prices_as_of answers every lookup as of one instant (reproducible tests)."""
    mistral, _ = schedule_for("mistral", "mistral-small-latest")
    assert mistral is not None
    pinned = mistral.pinned(parse_as_of("2026-01-01"))
    assert pinned.rates_at(parse_as_of("2026-12-01") or 0).input == 0.1


def test_declared_prices_win_and_keep_the_cache_discount() -> None:
    """models.yaml input/output prices replace the package's; cache reads keep its ratio."""
    haiku, _ = schedule_for("anthropic", "claude-haiku-4-5")
    assert haiku is not None
    mine = haiku.with_rates(2.0, 8.0).rates_at(parse_as_of("2026-12-01") or 0)
    assert (mine.input, mine.output, mine.cache_read, mine.cache_write) == (2.0, 8.0, 0.2, 2.5)


def test_long_context_tier_applies_to_every_token() -> None:
    """Above the tier's threshold the whole prompt and the output pay the tier's prices."""
    rates = Rates(1.0, 2.0, 0.1, 1.0, tiers=((200_000, Rates(2.0, 4.0, 0.2, 2.0)),))
    assert cost(rates, 200_000, 0) == pytest.approx(0.2)
    assert cost(rates, 200_001, 1_000) == pytest.approx((200_001 * 2.0 + 1_000 * 4.0) / 1e6)


def test_unknown_models_have_no_price_never_zero() -> None:
    """A model genai-prices does not know resolves to None, not to a free model."""
    assert schedule_for("openai", "no-such-model-xyz") == (None, None)


def test_counts_out_of_range_are_clamped() -> None:
    """Cache counts larger than the prompt, or negative counts, never make a negative cost."""
    flat = PriceSchedule.flat(Rates(1.0, 1.0, 0.5, 2.0)).rates_at(0)
    assert cost(flat, 10, -5, cache_read=50, cache_write=50) == pytest.approx(5e-6)
    assert cost(flat, -3, 0) == 0.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [("2026-01-01", 1767225600.0), ("2026-01-01T06:00:00+00:00", 1767247200.0), (None, None)],
)
def test_as_of_accepts_a_day_or_an_instant(text: str | None, expected: float | None) -> None:
    """A date means its UTC midnight; an ISO timestamp is taken as written."""
    assert parse_as_of(text) == expected

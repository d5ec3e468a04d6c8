"""Prices and context windows from the `genai-prices` data package (offline, maintained).

Why: a hand-kept price table rots within weeks. models.yaml may still set any value, and
that always wins; this module only fills what the file leaves unset. Lookups are cached,
and a model the package does not know simply resolves to None (never to zero).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache

from genai_prices import Usage, data_snapshot

#: Our provider ids whose genai-prices id differs.
PROVIDER_ALIASES = {"gemini": "google"}
_WHEN = datetime(2026, 1, 1, tzinfo=UTC)  # fixed, so compiled plans are reproducible


@dataclass(frozen=True, slots=True)
class PriceInfo:
    input_price: float | None  # USD per 1M tokens
    output_price: float | None
    context_window: int | None


NO_PRICE = PriceInfo(None, None, None)


@cache
def lookup(provider: str, model: str) -> PriceInfo:
    """What genai-prices knows about `model` at `provider` (a genai-prices provider id)."""
    snapshot = data_snapshot.get_snapshot()
    pid = PROVIDER_ALIASES.get(provider, provider)
    try:
        found_provider, info = snapshot.find_provider_model(model, None, pid, None)
    except LookupError:
        return NO_PRICE
    try:
        # Priced on 1k tokens and scaled: tiered prices must use the base (short prompt) tier.
        k_in = info.calc_price(
            Usage(input_tokens=1000), found_provider, genai_request_timestamp=_WHEN
        )
        k_out = info.calc_price(
            Usage(output_tokens=1000), found_provider, genai_request_timestamp=_WHEN
        )
    except (LookupError, ValueError, TypeError, ArithmeticError):
        return PriceInfo(None, None, info.context_window)
    return PriceInfo(_per_m(k_in.total_price), _per_m(k_out.total_price), info.context_window)


def _per_m(price_per_k: object) -> float:
    return round(float(str(price_per_k)) * 1000, 6)

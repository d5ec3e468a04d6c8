"""In-memory counters behind `Engine.stats()`: totals and per provider / per model.

Cheap enough for the hot path (a few dict updates per attempt); latency percentiles come
from a bounded window of recent samples so memory stays flat under any traffic.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

#: Latency samples kept per provider / model for the percentiles.
WINDOW = 1024
#: Outcomes kept per provider / model for the recent error rate (what health looks at).
RECENT = 20


def _percentile(samples: deque[float], q: float) -> float | None:
    if not samples:
        return None
    ordered = sorted(samples)
    i = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[i]


@dataclass(slots=True)
class _Bucket:
    requests: int = 0
    successes: int = 0
    failures: int = 0
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))
    recent: deque[bool] = field(default_factory=lambda: deque(maxlen=RECENT))

    def view(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "successes": self.successes,
            "failures": self.failures,
            "error_rate": self.failures / self.requests if self.requests else 0.0,
            "latency_avg_ms": sum(self.latencies) / len(self.latencies) if self.latencies else None,
            "latency_p50_ms": _percentile(self.latencies, 0.5),
            "latency_p95_ms": _percentile(self.latencies, 0.95),
            "cost_usd": self.cost_usd,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
        }


@dataclass(slots=True)
class _Totals:
    requests: int = 0
    successes: int = 0
    failures: int = 0
    cache_hits: int = 0
    fallbacks: int = 0
    cost_usd: float = 0.0
    unknown_cost_responses: int = 0
    input_tokens: int = 0
    output_tokens: int = 0


class Stats:
    """Counts requests (calls of the engine) and attempts (calls of an upstream)."""

    def __init__(self) -> None:
        self._totals = _Totals()
        self._providers: dict[str, _Bucket] = {}
        self._models: dict[str, _Bucket] = {}

    def attempt(
        self,
        provider: str,
        model: str,
        ok: bool,
        latency_ms: float,
        cost: float | None = None,
        input_tokens: int = 0,
        output_tokens: int = 0,
    ) -> None:
        """One upstream call ended (success or failure)."""
        # get-then-create rather than setdefault(key, _Bucket()): that would build (and
        # drop) two buckets with their deques on every call of the hot path.
        by_provider = self._providers.get(provider)
        if by_provider is None:
            by_provider = self._providers[provider] = _Bucket()
        by_model = self._models.get(model)
        if by_model is None:
            by_model = self._models[model] = _Bucket()
        # Both buckets in one loop (no method call per bucket): this runs for every attempt.
        for bucket in (by_provider, by_model):
            bucket.requests += 1
            bucket.recent.append(ok)
            if ok:
                bucket.successes += 1
                bucket.latencies.append(latency_ms)
            else:
                bucket.failures += 1
            bucket.cost_usd += cost or 0.0
            bucket.input_tokens += input_tokens
            bucket.output_tokens += output_tokens

    def request(
        self,
        ok: bool,
        cost: float | None = None,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cached: bool = False,
        fallback: bool = False,
    ) -> None:
        """One engine call ended; `fallback` when it was not answered by its first choice."""
        t = self._totals
        t.requests += 1
        if not ok:
            t.failures += 1
            return
        t.successes += 1
        t.cache_hits += cached
        t.fallbacks += fallback
        if cost is None:
            t.unknown_cost_responses += 1
        else:
            t.cost_usd += cost
        t.input_tokens += input_tokens
        t.output_tokens += output_tokens

    def recent_error_rate(self, provider: str) -> float:
        """The share of failures among the provider's last RECENT attempts."""
        b = self._providers.get(provider)
        if b is None or not b.recent:
            return 0.0
        return b.recent.count(False) / len(b.recent)

    def snapshot(self) -> dict[str, Any]:
        """A plain-dict copy, safe to serialise (JSON) and to keep."""
        t = self._totals
        return {
            "totals": {
                "requests": t.requests,
                "successes": t.successes,
                "failures": t.failures,
                "cache_hits": t.cache_hits,
                "fallbacks": t.fallbacks,
                "cost_usd": t.cost_usd,
                "unknown_cost_responses": t.unknown_cost_responses,
                "input_tokens": t.input_tokens,
                "output_tokens": t.output_tokens,
                "total_tokens": t.input_tokens + t.output_tokens,
            },
            "providers": {k: b.view() for k, b in self._providers.items()},
            "models": {k: b.view() for k, b in self._models.items()},
        }

"""In-memory counters behind `Engine.stats()`: totals and per provider / per model.

Cheap enough for the hot path (a few dict updates per attempt); latency percentiles come
from a bounded window of recent samples so memory stays flat under any traffic.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
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

    def export(self) -> dict[str, Any]:
        """The raw figures (latency samples, not percentiles), which `merge` can add up."""
        return {
            "requests": self.requests,
            "successes": self.successes,
            "failures": self.failures,
            "cost_usd": self.cost_usd,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "latencies": list(self.latencies),
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

    def export(self) -> dict[str, Any]:
        """Raw, mergeable figures: what one worker of several hands the one that answers
        /v1/stats (`merge` turns any number of them into `snapshot`'s shape)."""
        t = self._totals
        return {
            "totals": {name: getattr(t, name) for name in _Totals.__slots__},
            "providers": {k: b.export() for k, b in self._providers.items()},
            "models": {k: b.export() for k, b in self._models.items()},
        }

    def snapshot(self) -> dict[str, Any]:
        """A plain-dict copy, safe to serialise (JSON) and to keep."""
        return merge([self.export()])


def merge(exports: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Several `Stats.export()`s (one per worker) as one `snapshot`: counts and costs
    added, error rates and latency percentiles over every worker's samples together."""
    totals = _sum(e["totals"] for e in exports)
    totals["total_tokens"] = totals["input_tokens"] + totals["output_tokens"]
    return {
        "totals": totals,
        "providers": _merge_buckets([e["providers"] for e in exports]),
        "models": _merge_buckets([e["models"] for e in exports]),
    }


def _sum(parts: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in parts:
        for name, value in part.items():
            out[name] = out.get(name, 0) + value
    return out


def _merge_buckets(groups: Sequence[Mapping[str, Mapping[str, Any]]]) -> dict[str, Any]:
    names = {name: None for group in groups for name in group}  # first-seen order
    return {name: _view([g[name] for g in groups if name in g]) for name in names}


def _view(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    samples: deque[float] = deque(x for p in parts for x in p["latencies"])
    n = _sum({k: v for k, v in p.items() if k != "latencies"} for p in parts)
    return {
        "requests": n["requests"],
        "successes": n["successes"],
        "failures": n["failures"],
        "error_rate": n["failures"] / n["requests"] if n["requests"] else 0.0,
        "latency_avg_ms": sum(samples) / len(samples) if samples else None,
        "latency_p50_ms": _percentile(samples, 0.5),
        "latency_p95_ms": _percentile(samples, 0.95),
        "cost_usd": n["cost_usd"],
        "input_tokens": n["input_tokens"],
        "output_tokens": n["output_tokens"],
    }

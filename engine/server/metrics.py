"""Prometheus metrics for the server, on a registry of its own (one per app, so tests are isolated).

Per-request figures (requests, latency, time to first token, tokens, cost, fallbacks, cache
hits) are observed as responses leave. Live engine state (breaker states, rate-limit waits)
is read from `Engine.stats()` at scrape time by a collector, so it is never stale and costs
nothing per request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from engine.errors import AttemptRecord

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BREAKER_VALUES = {"closed": 0, "half_open": 1, "open": 2}


class ServerMetrics:
    """The metric objects and the few verbs the app calls on them."""

    def __init__(self, stats: Callable[[], Mapping[str, Any]] | None = None) -> None:
        self.registry = CollectorRegistry()
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        r = self.registry
        self.requests = Counter(
            "engine_requests",
            "Chat requests by outcome.",
            ["policy", "provider", "status", "stream"],
            registry=r,
        )
        self.latency = Histogram(
            "engine_request_latency_seconds",
            "Whole-request latency.",
            ["policy", "stream"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "engine_ttft_seconds",
            "Time to the first streamed chunk.",
            ["policy"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "engine_tokens", "Tokens by direction.", ["provider", "model", "direction"], registry=r
        )
        self.cost = Counter("engine_cost_usd", "Spend in USD.", ["provider", "model"], registry=r)
        self.fallbacks = Counter(
            "engine_fallbacks", "Requests answered by a fallback candidate.", ["policy"], registry=r
        )
        self.attempt_failures = Counter(
            "engine_attempt_failures",
            "Failed attempts by provider and kind.",
            ["provider", "kind"],
            registry=r,
        )
        self.cache_hits = Counter(
            "engine_cache_hits", "Responses served from cache.", ["policy"], registry=r
        )
        if stats is not None:
            r.register(EngineStateCollector(stats))

    def observe(
        self,
        *,
        policy: str | None,
        provider: str,
        model: str,
        status: int,
        stream: bool,
        seconds: float,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cost_usd: float | None = None,
        attempts: tuple[AttemptRecord, ...] = (),
        cached: bool = False,
    ) -> None:
        p = policy or ""
        kind = "true" if stream else "false"
        self._child(self.requests, p, provider, str(status), kind).inc()
        self._child(self.latency, p, kind).observe(seconds)
        if input_tokens or output_tokens:
            self._child(self.tokens, provider, model, "input").inc(input_tokens)
            self._child(self.tokens, provider, model, "output").inc(output_tokens)
        if cost_usd:
            self._child(self.cost, provider, model).inc(cost_usd)
        if cached:
            self._child(self.cache_hits, p).inc()
        self.observe_attempts(p, attempts)

    def observe_ttft(self, policy: str | None, seconds: float) -> None:
        self._child(self.ttft, policy or "").observe(seconds)

    def _child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, memoised: prometheus-client's lookup is the slow part."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def observe_attempts(self, policy: str, attempts: tuple[AttemptRecord, ...]) -> None:
        for a in attempts:
            if a.outcome != "ok":
                self._child(self.attempt_failures, a.provider, a.outcome).inc()
        if attempts and attempts[-1].outcome == "ok" and attempts[-1].fallback_index > 0:
            self._child(self.fallbacks, policy).inc()

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))


class EngineStateCollector(Collector):
    """Breaker states and rate-limit waiters, read from the engine at scrape time.

    The reader returns `{"breakers": {name: "closed"|"half_open"|"open"},
    "rate_limit_queued": {provider: waiting requests}}`; absent keys yield no samples.
    Requests that gave up waiting show as `engine_attempt_failures{kind="rate_limited"}`.
    """

    def __init__(self, stats: Callable[[], Mapping[str, Any]]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        try:
            stats = self._stats()
        except Exception:  # a scrape must never fail because the engine is mid-reload
            return
        breakers = GaugeMetricFamily(
            "engine_breaker_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
            labels=["target"],
        )
        for name, state in dict(stats.get("breakers") or {}).items():
            breakers.add_metric([str(name)], BREAKER_VALUES.get(str(state), -1))
        yield breakers
        waits = GaugeMetricFamily(
            "engine_rate_limit_queued",
            "Requests waiting for rate-limit headroom right now.",
            labels=["provider"],
        )
        for name, count in dict(stats.get("rate_limit_queued") or {}).items():
            waits.add_metric([str(name)], float(count))
        yield waits

"""Prometheus metrics for the server, on a registry of its own (one per app, so tests are isolated).

Per-request figures (requests, latency, time to first token, tokens, cost, fallbacks, cache
hits) are observed as responses leave; requests, latency, tokens, cost and cache hits are
summed in plain numbers and added to their series when /metrics is scraped (lock-free:
requests and scrapes both run on the event loop's thread). Live engine state (breaker
states, rate-limit waits) is read from `Engine.stats()` at scrape time by a collector, so it
is never stale and costs nothing per request.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Container, Iterator, Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from engine.errors import AttemptRecord

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BREAKER_VALUES = {"closed": 0, "half_open": 1, "open": 2}


#: The metric label of a policy name the client gave that the config does not define.
UNKNOWN_POLICY = "unknown"


def policy_label(policy: str | None, known: Container[str]) -> str | None:
    """`policy` as a metric label: a configured name as it is, anything else `unknown`.

    A label value is a series kept for the life of the process, and a request's
    `x-engine-policy` header is the client's to choose (unauthenticated requests too): 5,000
    invented names made /metrics 20.9 MB and 0.9 s a scrape. Labels come from the config."""
    if policy is None or policy in known:
        return policy
    return UNKNOWN_POLICY


class ServerMetrics:
    """The metric objects and the few verbs the app calls on them."""

    def __init__(
        self,
        stats: Callable[[], Mapping[str, Any]] | None = None,
        multiprocess_dir: Path | None = None,
    ) -> None:
        """`multiprocess_dir`: this server's workers' shared directory (runner.serve sets
        PROMETHEUS_MULTIPROC_DIR to it before they start), so a scrape adds up the counters
        and histograms of every worker from their files, whichever worker answers; each
        count then reaches its file as it happens, not at this worker's next scrape."""
        self._multiprocess_dir = multiprocess_dir
        self.registry = CollectorRegistry()
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._rows: dict[tuple[str | None, str, str, int, bool], _Row] = {}
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
        if stats is not None and multiprocess_dir is None:
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
        # Hot path (every request): one dict lookup finds the row of this outcome, which
        # sums the request into plain numbers (see _Row).
        key = (policy, provider, model, status, stream)
        row = self._rows.get(key)
        if row is None:
            row = self._rows[key] = _Row(self, policy or "", provider, model, status, stream)
        row.add(seconds, input_tokens, output_tokens, cost_usd, cached)
        if attempts:
            self.observe_attempts(row.policy, attempts)
        if self._multiprocess_dir is not None:
            row.flush()  # siblings read the files at their scrapes, not ours

    def flush(self) -> None:
        """Hand the amounts summed since the last scrape to their prometheus series."""
        for row in self._rows.values():
            row.flush()

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

    def render(self, live: Mapping[str, Any] | None = None) -> bytes:
        """The Prometheus text; in multiprocess mode every worker's counters from the files,
        with `live` (breakers, waiters, reloads: every worker's, server/aggregate.py)."""
        self.flush()
        if self._multiprocess_dir is None:
            return bytes(generate_latest(self.registry))
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(self._multiprocess_dir))  # type: ignore[no-untyped-call]
        if live is not None:
            registry.register(EngineStateCollector(lambda: live))
        return bytes(generate_latest(registry))


class _Row:
    """The series one kind of outcome (policy, provider, model, status, stream) touches, and
    what it counted since the last `flush`.

    Observing a request adds to plain numbers here; `flush` (at each scrape, or after each
    request when sibling workers read the files) hands the sums to prometheus-client, whose
    every `inc` and histogram `observe` takes a lock: ~8k instructions a request more. A
    series is still created at its first use, so which series exist and their `_created`
    times do not depend on when scrapes happen.
    """

    __slots__ = (
        "bounds", "buckets", "cache_hits", "cached", "cost", "cost_usd", "input_tokens",
        "latency", "metrics", "model", "output_tokens", "policy", "provider", "requests",
        "requests_n", "seconds", "tokens",
    )  # fmt: skip

    def __init__(
        self, metrics: ServerMetrics, policy: str, provider: str, model: str, status: int,
        stream: bool,
    ) -> None:  # fmt: skip
        kind = "true" if stream else "false"
        self.metrics, self.policy, self.provider, self.model = metrics, policy, provider, model
        self.requests = metrics._child(metrics.requests, policy, provider, str(status), kind)
        self.latency = metrics._child(metrics.latency, policy, kind)
        self.bounds: tuple[float, ...] = tuple(self.latency._upper_bounds)  # ends with +Inf
        self.tokens: tuple[Any, Any] | None = None
        self.cost: Any = None
        self.cache_hits: Any = None
        self._reset()

    def _reset(self) -> None:
        self.requests_n = self.cached = self.input_tokens = self.output_tokens = 0
        self.seconds = self.cost_usd = 0.0
        self.buckets = [0] * len(self.bounds)

    def add(
        self, seconds: float, input_tokens: int, output_tokens: int, cost_usd: float | None,
        cached: bool,
    ) -> None:  # fmt: skip
        """One request; its latency lands in the bucket prometheus-client's `observe` picks
        (the first bound at or above it)."""
        self.requests_n += 1
        self.seconds += seconds
        self.buckets[bisect_left(self.bounds, seconds)] += 1
        if input_tokens or output_tokens:
            if self.tokens is None:
                m = self.metrics
                self.tokens = (
                    m._child(m.tokens, self.provider, self.model, "input"),
                    m._child(m.tokens, self.provider, self.model, "output"),
                )
            self.input_tokens += input_tokens
            self.output_tokens += output_tokens
        if cost_usd:
            if self.cost is None:
                self.cost = self.metrics._child(self.metrics.cost, self.provider, self.model)
            self.cost_usd += cost_usd
        if cached:
            if self.cache_hits is None:
                self.cache_hits = self.metrics._child(self.metrics.cache_hits, self.policy)
            self.cached += 1

    def flush(self) -> None:
        """Hand the sums to their series (the histogram's as its own `observe` would)."""
        if not self.requests_n:
            return
        self.requests.inc(self.requests_n)
        latency = self.latency
        latency._sum.inc(self.seconds)
        for bucket, count in zip(latency._buckets, self.buckets, strict=True):
            if count:
                bucket.inc(count)
        if self.input_tokens or self.output_tokens:
            assert self.tokens is not None
            self.tokens[0].inc(self.input_tokens)
            self.tokens[1].inc(self.output_tokens)
        if self.cost_usd:
            self.cost.inc(self.cost_usd)
        if self.cached:
            self.cache_hits.inc(self.cached)
        self._reset()


class EngineStateCollector(Collector):
    """Breaker states and rate-limit waiters, read from the engine at scrape time.

    The reader returns `{"breakers": {name: "closed"|"half_open"|"open"},
    "rate_limit_queued": {provider: waiting requests}, "config_reloads": n,
    "config_reload_failures": n}`; absent keys yield no samples.
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
        for key, help_text in _RELOAD_COUNTERS.items():
            if key in stats:
                yield CounterMetricFamily(f"engine_{key}", help_text, value=float(stats[key]))


#: Hot-reload counters read from the config watcher (present when the app has one).
_RELOAD_COUNTERS = {
    "config_reloads": "Config changes applied by hot reload.",
    "config_reload_failures": "Config edits rejected by hot reload (the old config serves on).",
}

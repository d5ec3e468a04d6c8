"""Prometheus metrics for the server, on a registry of its own (one per app, so tests are isolated).

Per-request figures (requests, latency, time to first token, tokens, cost, fallbacks, cache
hits) are observed as responses leave; the counters among them are summed in plain numbers
and added to their series when /metrics is scraped (lock-free: requests and scrapes both run
on the event loop's thread). Live engine state (breaker states, rate-limit waits)
is read from `Engine.stats()` at scrape time by a collector, so it is never stale and costs
nothing per request.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Container, Iterator, Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from engine.errors import AttemptRecord
from engine.state import before_answer

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BREAKER_VALUES = {"closed": 0, "half_open": 1, "open": 2}


#: This process's id, kept: prometheus-client's shared-file values ask for it on every
#: count to notice a fork, and on Python 3.11 `os.getpid()` is a system call (~0.4 us here;
#: 6 a request under `--workers 2`). A forked child updates it before anything counts.
_PID = [os.getpid()]
os.register_at_fork(after_in_child=lambda: _PID.__setitem__(0, os.getpid()))


def _this_process() -> int:
    return _PID[0]


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
        if multiprocess_dir is not None:  # the values of the metrics made from here on
            before_answer.will_hold()  # see observe
            made = values.MultiProcessValue(process_identifier=_this_process)  # type: ignore[no-untyped-call]
            values.ValueClass = made
        self.registry = CollectorRegistry()
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._rows: dict[tuple[str | None, str, str, int, bool], _Row] = {}
        self._pending: dict[Any, float] = {}  # prometheus child -> amount not yet added
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
        # Hot path (every request): one dict lookup finds the series of this outcome, and
        # counters are summed in `_pending` and handed to prometheus-client at scrape time,
        # since each of its `inc` calls takes a lock (half the cost of this method before).
        key = (policy, provider, model, status, stream)
        row = self._rows.get(key)
        if row is None:
            row = self._rows[key] = _Row(self, policy or "", provider, model, status, stream)
        pending = self._pending
        pending[row.requests] = pending.get(row.requests, 0.0) + 1
        row.latency.observe(seconds)
        if input_tokens or output_tokens:
            tokens_in, tokens_out = row.tokens()
            pending[tokens_in] = pending.get(tokens_in, 0.0) + input_tokens
            pending[tokens_out] = pending.get(tokens_out, 0.0) + output_tokens
        if cost_usd:
            cost = row.cost()
            pending[cost] = pending.get(cost, 0.0) + cost_usd
        if cached:
            hits = row.cache_hits()
            pending[hits] = pending.get(hits, 0.0) + 1
        if attempts:
            self.observe_attempts(row.policy, attempts)
        if self._multiprocess_dir is not None:  # siblings read the files at their scrapes
            if before_answer.armed():  # once a turn, before its answers leave (one worker's
                before_answer.hold(self, self.flush)  # files took 6 writes a request)
            else:
                self.flush()

    def flush(self) -> None:
        """Hand the counts summed since the last scrape to their prometheus series."""
        pending, self._pending = self._pending, {}
        for child, amount in pending.items():
            child.inc(amount)

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
    """The series one kind of outcome (policy, provider, model, status, stream) touches.

    Each is created at its first use, as `ServerMetrics._child` would, so which series
    exist and their `_created` times do not depend on when scrapes happen.
    """

    __slots__ = (
        "_cache_hits", "_cost", "_tokens", "latency", "metrics", "model", "policy", "provider",
        "requests",
    )  # fmt: skip

    def __init__(
        self, metrics: ServerMetrics, policy: str, provider: str, model: str, status: int,
        stream: bool,
    ) -> None:  # fmt: skip
        kind = "true" if stream else "false"
        self.metrics, self.policy, self.provider, self.model = metrics, policy, provider, model
        self.requests = metrics._child(metrics.requests, policy, provider, str(status), kind)
        self.latency = metrics._child(metrics.latency, policy, kind)
        self._tokens: tuple[Any, Any] | None = None
        self._cost: Any = None
        self._cache_hits: Any = None

    def tokens(self) -> tuple[Any, Any]:
        if self._tokens is None:
            m = self.metrics
            self._tokens = (
                m._child(m.tokens, self.provider, self.model, "input"),
                m._child(m.tokens, self.provider, self.model, "output"),
            )
        return self._tokens

    def cost(self) -> Any:
        if self._cost is None:
            self._cost = self.metrics._child(self.metrics.cost, self.provider, self.model)
        return self._cost

    def cache_hits(self) -> Any:
        if self._cache_hits is None:
            self._cache_hits = self.metrics._child(self.metrics.cache_hits, self.policy)
        return self._cache_hits


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

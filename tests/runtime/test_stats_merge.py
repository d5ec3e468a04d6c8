"""Stats of several workers merged (engine.runtime.stats.merge) equal one process's."""

from __future__ import annotations

import pytest

from engine.runtime.stats import Stats, merge


def _traffic(stats: Stats, latencies: list[float], failures: int = 0) -> None:
    for ms in latencies:
        stats.attempt("p", "p/m", True, ms, cost=0.5, input_tokens=3, output_tokens=2)
        stats.request(True, cost=0.5, input_tokens=3, output_tokens=2)
    for _ in range(failures):
        stats.attempt("p", "p/m", False, 1.0)
        stats.request(False)


def test_merged_workers_equal_one_process_with_all_their_traffic() -> None:
    """Two workers' exports merged show the same totals, error rates and percentiles as
    one Stats that saw both workers' traffic."""
    a, b, whole = Stats(), Stats(), Stats()
    _traffic(a, [10.0, 20.0, 30.0], failures=1)
    _traffic(b, [40.0, 50.0])
    _traffic(whole, [10.0, 20.0, 30.0], failures=1)
    _traffic(whole, [40.0, 50.0])
    merged = merge([a.export(), b.export()])
    assert merged == whole.snapshot()
    assert merged["totals"]["requests"] == 6 and merged["totals"]["cost_usd"] == 2.5
    assert merged["providers"]["p"]["error_rate"] == pytest.approx(1 / 6)
    assert merged["models"]["p/m"]["latency_p50_ms"] == 30.0


def test_one_export_is_the_snapshot() -> None:
    """A single worker's export merges into exactly its own snapshot (the /v1/stats shape)."""
    s = Stats()
    _traffic(s, [5.0], failures=2)
    assert merge([s.export()]) == s.snapshot()
    assert set(s.snapshot()["totals"]) >= {"requests", "total_tokens", "unknown_cost_responses"}

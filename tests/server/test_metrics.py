"""ServerMetrics on its own: counters summed between scrapes land once, in the right series."""

from __future__ import annotations

from engine.errors import AttemptRecord
from engine.server.metrics import ServerMetrics

OK = (AttemptRecord("p", "p/m", "ok"),)


def _observe(m: ServerMetrics, **kw: object) -> None:
    args: dict[str, object] = {
        "policy": "fast", "provider": "p", "model": "p/m", "status": 200, "stream": False,
        "seconds": 0.003, "input_tokens": 5, "output_tokens": 1, "cost_usd": 0.5, "attempts": OK,
    }  # fmt: skip
    m.observe(**{**args, **kw})  # type: ignore[arg-type]


def test_counts_between_scrapes_are_added_once() -> None:
    """Requests observed before and after a scrape are each counted exactly once."""
    m = ServerMetrics()
    _observe(m)
    first = m.render().decode()
    _observe(m)
    _observe(m, cached=True)
    second = m.render().decode()
    third = m.render().decode()
    series = 'engine_requests_total{policy="fast",provider="p",status="200",stream="false"}'
    assert f"{series} 1.0" in first
    assert f"{series} 3.0" in second and f"{series} 3.0" in third
    assert 'engine_tokens_total{direction="input",model="p/m",provider="p"} 15.0' in third
    assert 'engine_cost_usd_total{model="p/m",provider="p"} 1.5' in third
    assert 'engine_cache_hits_total{policy="fast"} 1.0' in third
    assert 'engine_request_latency_seconds_count{policy="fast",stream="false"} 3.0' in third


def test_series_appear_only_once_used() -> None:
    """A failure with no tokens, cost or cache hit creates no token, cost or cache series."""
    m = ServerMetrics()
    _observe(m, policy=None, provider="", model="", status=404, input_tokens=0, output_tokens=0,
             cost_usd=None, attempts=())  # fmt: skip
    text = m.render().decode()
    assert 'engine_requests_total{policy="",provider="",status="404",stream="false"} 1.0' in text
    assert "engine_tokens_total{" not in text
    assert "engine_cost_usd_total{" not in text
    assert "engine_cache_hits_total{" not in text

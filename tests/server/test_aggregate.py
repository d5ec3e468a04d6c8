"""Several workers' /v1/stats and live /metrics figures added up (server/aggregate.py)."""

from __future__ import annotations

import os
from pathlib import Path

from engine.server.aggregate import merge_engine, merge_live
from engine.server.runner import WORKERS_DIR_ENV, shared_workers_dir, workers_dir
from engine.server.settings import ServerSettings


def test_live_state_takes_the_worst_breaker_and_sums_waiters() -> None:
    """A breaker open in one worker is open for the server; queued waiters add up;
    reload counts (the same files in every worker) take the largest."""
    merged = merge_live(
        [
            {"breakers": {"p": "closed", "q": "half_open"}, "rate_limit_queued": {"p": 2},
             "config_reloads": 3, "config_reload_failures": 0},
            {"breakers": {"p": "open", "q": "closed"}, "rate_limit_queued": {"p": 1, "q": 4},
             "config_reloads": 2, "config_reload_failures": 1},
        ]
    )  # fmt: skip
    assert merged == {
        "breakers": {"p": "open", "q": "half_open"},
        "rate_limit_queued": {"p": 3, "q": 4},
        "config_reloads": 3,
        "config_reload_failures": 1,
    }


def test_engine_figures_add_up_with_cache_counters_and_breakers() -> None:
    """merge_engine adds the stats and the cache counters, and keeps the worst breaker."""
    empty = {"totals": {"requests": 0, "input_tokens": 0, "output_tokens": 0}}
    parts = [
        {**empty, "providers": {}, "models": {}, "cache": {"hits": 1, "misses": 2},
         "breakers": {"p": "half_open"}},
        {**empty, "providers": {}, "models": {}, "cache": {"hits": 3}, "breakers": {}},
    ]  # fmt: skip
    merged = merge_engine(parts)
    assert merged["cache"] == {"hits": 4, "misses": 2}
    assert merged["breakers"] == {"p": "half_open"}


def test_the_supervisors_directory_is_private_named_and_removed(tmp_path: Path) -> None:
    """The workers' directory is created private, exported for the workers to inherit
    (prometheus-client's variable) and removed, with the variable, when the server stops."""
    before = os.environ.get(WORKERS_DIR_ENV)
    with shared_workers_dir() as directory:
        assert os.environ[WORKERS_DIR_ENV] == str(directory)
        assert directory.stat().st_mode & 0o077 == 0
        assert workers_dir(ServerSettings(config_dir=tmp_path, workers=2)) == directory
        assert workers_dir(ServerSettings(config_dir=tmp_path, workers=1)) is None
        (directory / "counter_1.db").write_bytes(b"x")
    assert not directory.exists()
    assert os.environ.get(WORKERS_DIR_ENV) == before

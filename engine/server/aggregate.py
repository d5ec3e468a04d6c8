"""/v1/stats, /v1/health, /v1/limits and the live part of /metrics, for one worker or for
all of a server's workers.

One worker answers from its own engine, as it always has. With `--workers N` the answering
worker gathers every sibling's snapshot (server/workers.py) and adds them up: request and
token counts and costs are sums, error rates and latency percentiles are computed over all
the workers' samples together (engine.runtime.stats.merge), a breaker is as open as it is
in the worker that found it worst, queued waiters are summed. Per-worker figures that are
the same everywhere (config reloads: every worker reloads the same files) take the
largest. So every scrape shows the whole server, whichever worker the kernel picked.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from engine.runtime.stats import merge
from engine.server.client_keys import key_spend
from engine.server.common import RoutingEngine, ServerState
from engine.server.metrics import BREAKER_VALUES
from engine.server.reload import ConfigWatcher
from engine.server.workers import Workers

Snapshot = Mapping[str, Any]


def live_reader(
    engine: RoutingEngine, watcher: ConfigWatcher | None = None
) -> Callable[[], Mapping[str, Any]]:
    """Breaker states from stats(), queued waiters per provider and the hot-reload counts,
    for the metrics scrape."""

    def read() -> Mapping[str, Any]:
        stats = engine.stats()
        stats = stats if isinstance(stats, Mapping) else {}
        status = getattr(engine, "rate_limit_status", None)
        queued: dict[str, int] = {}
        if status is not None:
            for provider in engine.plan.providers.values():
                if provider.enabled:
                    queued[provider.id] = int(status(provider.id).get("queued", 0))
        out: dict[str, Any] = {"breakers": stats.get("breakers") or {}, "rate_limit_queued": queued}
        if watcher is not None:
            out["config_reloads"] = watcher.reloads
            out["config_reload_failures"] = watcher.failures
        return out

    return read


def worker_snapshot(state: ServerState, live: Callable[[], Mapping[str, Any]]) -> Snapshot:
    """What this worker tells a sibling: mergeable engine figures and its live state."""
    return {
        "engine": state.engine.stats(samples=True),
        "live": live(),
        "started": state.started,
    }


def workers_of(state: ServerState) -> Workers | None:
    workers: Workers | None = state.extras.get("workers")
    return workers


async def stats_payload(state: ServerState) -> dict[str, Any]:
    """The /v1/stats body: this worker's engine, or every worker's added up."""
    server: dict[str, Any] = {
        "uptime_s": time.time() - state.started,
        "key_spend_usd": await key_spend(state),  # from the shared store: every worker's
        "reloads": state.watcher.reloads if state.watcher else 0,
        "reload_failures": state.watcher.failures if state.watcher else 0,
    }
    workers = workers_of(state)
    if workers is None:
        return {"engine": state.engine.stats(), "server": server}
    snapshots, missing = await workers.gather()
    live = merge_live([s["live"] for s in snapshots])
    server["uptime_s"] = time.time() - min(float(s["started"]) for s in snapshots)
    server["reloads"] = live.get("config_reloads", 0)
    server["reload_failures"] = live.get("config_reload_failures", 0)
    server["workers"] = {
        "answered": len(snapshots),
        "missing": missing,
        "requests": [s["engine"]["totals"]["requests"] for s in snapshots],  # this one first
    }
    return {"engine": merge_engine([s["engine"] for s in snapshots]), "server": server}


async def engine_stats(state: ServerState) -> Mapping[str, Any]:
    """`engine.stats()` for the whole server: this worker's, or every worker's merged (so
    /v1/health shows every worker's traffic and the most open state of each breaker)."""
    workers = workers_of(state)
    if workers is None:
        stats: Mapping[str, Any] = state.engine.stats()
        return stats
    snapshots, _ = await workers.gather()
    return merge_engine([s["engine"] for s in snapshots])


async def live_state(state: ServerState) -> Snapshot:
    """Every worker's live figures merged, for /metrics (one worker's come from its own
    collector)."""
    workers = workers_of(state)
    if workers is None:
        return {}
    snapshots, _ = await workers.gather()
    return merge_live([s["live"] for s in snapshots])


def merge_engine(parts: list[Snapshot]) -> dict[str, Any]:
    """Several workers' `engine.stats(samples=True)` as one `engine.stats()`."""
    out = merge(parts)
    cache: dict[str, Any] = {}
    for part in parts:
        for name, value in dict(part.get("cache") or {}).items():
            cache[name] = cache.get(name, 0) + value
    out["cache"] = cache
    out["breakers"] = _worst([p.get("breakers") or {} for p in parts])
    return out


def merge_live(parts: list[Snapshot]) -> dict[str, Any]:
    """Several workers' live states (`live_reader`) as one."""
    queued: dict[str, int] = {}
    for part in parts:
        for provider, count in dict(part.get("rate_limit_queued") or {}).items():
            queued[provider] = queued.get(provider, 0) + int(count)
    out: dict[str, Any] = {
        "breakers": _worst([p.get("breakers") or {} for p in parts]),
        "rate_limit_queued": queued,
    }
    for key in ("config_reloads", "config_reload_failures"):
        values = [int(p[key]) for p in parts if key in p]
        if values:
            out[key] = max(values)
    return out


def _worst(boards: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Per breaker, the most open state any worker has it in."""
    out: dict[str, str] = {}
    for board in boards:
        for name, state in board.items():
            if BREAKER_VALUES.get(str(state), -1) > BREAKER_VALUES.get(out.get(name, ""), -1):
                out[name] = str(state)
    return out

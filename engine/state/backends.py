"""Which backends a URL names: ENGINE_STATE_URL for live state, ENGINE_LEDGER_URL for costs.

One switch each, read by the composition root (engine/assemble.py):

- a state URL `redis://` or `rediss://` (Valkey speaks the same protocol) moves budgets
  (workspaces' and client keys'), rate limits, the response cache and breaker openings to
  Redis, one client shared by all; no URL keeps the in-process defaults;
- a ledger URL `postgresql://` (or `postgres://`) moves the cost ledger to Postgres; a
  plain path (or `sqlite:///path`) is the SQLite ledger.

A URL of any other scheme is a ConfigError naming the setting and the schemes it takes;
no message repeats the URL itself, which may carry a password.

The Redis and Postgres backends are imported where their URL is read, not at the top:
redis-py brings ~120 modules with it (OpenTelemetry's among them) and asyncpg ~25, which
a process without those URLs never needs. Their ~23k objects were a quarter of such a
process's heap, walked by every full collection of the cyclic GC (bench.runtime at 50 in
flight: ~4 us of CPU a call).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from engine.clock import Clock
from engine.errors import ConfigError, Diagnostic
from engine.result import Response
from engine.state.codec import DataclassCodec
from engine.state.ledger import SQLiteLedger
from engine.state.protocols import (
    BreakerSignal,
    BudgetStore,
    Ledger,
    RateLimiter,
    ResponseCache,
)
from engine.state.ratelimit import InProcessRateLimiter

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
#: What a client-key budget's refusal calls the name it was reserved under.
KEY_SCOPE = "API key"
#: A reservation outlives its call's total timeout by this much before it expires.
HOLD_MARGIN_S = 60.0


@dataclass(frozen=True, slots=True)
class SharedState:
    """The live state every replica shares through one store."""

    rate_limiter: RateLimiter
    budget: BudgetStore
    client_budget: BudgetStore  # the same store, scoped by client API key id
    cache: ResponseCache
    breaker_signal: BreakerSignal


def _scheme(url: str) -> str:
    return url.split("://", 1)[0] + "://" if "://" in url else "(none)"


def shared_state(url: str, clock: Clock, *, hold_s: float) -> SharedState:
    """Budgets, limits and cache on the Redis at `url`; a budget hold lasts `hold_s` at most
    (the composition root passes the longest call timeout + HOLD_MARGIN_S).

    While Redis is away, rate limits fall back to this process's own in-process limiter
    (see RedisRateLimiter); budgets fail closed; the cache fails open."""
    if not url.startswith(REDIS_SCHEMES):
        raise ConfigError(
            [
                Diagnostic(
                    f"state_url / ENGINE_STATE_URL: scheme {_scheme(url)} is not supported",
                    hint="use redis://host:port/db or rediss:// (Valkey works too)",
                )
            ]
        )
    from engine.state.redis_breaker import RedisBreakerSignal
    from engine.state.redis_budget import RedisBudgetStore
    from engine.state.redis_budget_ahead import BookedAheadBudget
    from engine.state.redis_cache import RedisCache
    from engine.state.redis_common import connect
    from engine.state.redis_ratelimit import RedisRateLimiter
    from engine.state.redis_scripts import scripts_for

    client = connect(url)
    scripts = scripts_for(url, client, given=False)  # one pipelined connection for both
    limiter = InProcessRateLimiter(clock)
    return SharedState(
        rate_limiter=RedisRateLimiter(url, clock, limiter, client=client, scripts=scripts),
        budget=BookedAheadBudget(
            RedisBudgetStore(url, hold_s=hold_s, client=client, scripts=scripts)
        ),
        client_budget=BookedAheadBudget(
            RedisBudgetStore(
                url,
                hold_s=hold_s,
                client=client,
                scripts=scripts,
                prefix="engine:key",
                scope=KEY_SCOPE,
                totals=True,
            )
        ),
        cache=RedisCache(url, DataclassCodec(Response), clock, client=client),
        breaker_signal=RedisBreakerSignal(url, client=client),
    )


def ledger_at(url: str | os.PathLike[str], clock: Clock, *, spill_dir: Path) -> Ledger:
    """The ledger a URL or path names: Postgres (journaling its rows in `spill_dir`, so
    neither a crash nor an outage loses one) or a SQLite file (its directory created;
    its journal beside it)."""
    text = os.fspath(url)
    if text.startswith(POSTGRES_SCHEMES):
        from engine.state.postgres_ledger import PostgresLedger

        return PostgresLedger(text, journal_dir=spill_dir / "ledger-journal")
    if "://" in text and not text.startswith("sqlite:///"):
        raise ConfigError(
            [
                Diagnostic(
                    f"ledger_url / ENGINE_LEDGER_URL: scheme {_scheme(text)} is not supported",
                    hint="use postgresql://user@host/db, sqlite:///path or a file path",
                )
            ]
        )
    path = Path(text.removeprefix("sqlite://"))
    path.parent.mkdir(parents=True, exist_ok=True)
    return SQLiteLedger(str(path), clock)

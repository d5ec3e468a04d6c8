"""The state backends the protocol suites run against: one entry per backend.

A new backend (Redis, Postgres) joins every protocol test by adding one factory here. A
factory gets a `Scratch` (a directory, the test's clock, real servers on demand) and
returns `replicas` objects that share one state, as separate processes (or hosts) would:
the in-process store can only share by being the same object, the SQLite store opens the
same file several times (each with its own connection and thread), the Redis store opens
one client per replica on one server. A backend whose days and windows follow a server's
clock rather than the injected one is listed in SERVER_CLOCK; the few tests that move
the clock run on the others.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.clock import Clock
from engine.messages import RateLimitInfo
from engine.state.budget import InProcessBudgetStore
from engine.state.ledger import SQLiteLedger
from engine.state.postgres_ledger import PostgresLedger
from engine.state.protocols import BudgetStore, Lease, Ledger, RateLimiter
from engine.state.ratelimit import InProcessRateLimiter
from engine.state.redis_budget import RedisBudgetStore
from engine.state.redis_budget_ahead import BookedAheadBudget
from engine.state.redis_ratelimit import RedisRateLimiter
from engine.state.sqlite_budget import SQLiteBudgetStore
from engine.state.sqlite_ratelimit import SQLiteRateLimiter
from engine.testing.ledger import CapturingLedger
from engine.testing.recording import RecordingRateLimiter

_prefixes = itertools.count()


@dataclass
class Scratch:
    """What a factory may use: a fresh directory, the clock, and the session's servers."""

    path: Path
    clock: Clock
    request: pytest.FixtureRequest

    def __post_init__(self) -> None:
        self.prefix = f"proto{next(_prefixes)}"  # keys of this scratch only, on shared servers

    def redis_url(self) -> str:
        return str(self.request.getfixturevalue("redis_srv").url)

    def postgres_url(self) -> str:
        return str(self.request.getfixturevalue("postgres_srv").url)


BudgetFactory = Callable[[Scratch, int], Sequence[BudgetStore]]
LedgerFactory = Callable[[Scratch, Clock], Ledger]
LimiterFactory = Callable[[Scratch], RateLimiter]


def _in_process_budgets(scratch: Scratch, replicas: int) -> Sequence[BudgetStore]:
    store = InProcessBudgetStore(scratch.clock)
    return [store] * replicas


def _sqlite_budgets(scratch: Scratch, replicas: int) -> Sequence[BudgetStore]:
    path = scratch.path / "budgets.sqlite3"
    return [SQLiteBudgetStore(path, scratch.clock) for _ in range(replicas)]


def _redis_budgets(scratch: Scratch, replicas: int) -> Sequence[BudgetStore]:
    url = scratch.redis_url()
    return [RedisBudgetStore(url, prefix=scratch.prefix) for _ in range(replicas)]


def _redis_ahead_budgets(scratch: Scratch, replicas: int) -> Sequence[BudgetStore]:
    """The Redis store as the engine builds it: room booked ahead (redis_budget_ahead)."""
    url = scratch.redis_url()
    stores = (RedisBudgetStore(url, prefix=scratch.prefix) for _ in range(replicas))
    return [BookedAheadBudget(store) for store in stores]


BUDGETS: dict[str, BudgetFactory] = {
    "in-process": _in_process_budgets,
    "sqlite": _sqlite_budgets,
    "redis": _redis_budgets,
    "redis booked ahead": _redis_ahead_budgets,
}
#: Backends whose UTC day and month come from their server's clock, not the injected one.
SERVER_CLOCK = frozenset({"redis", "redis booked ahead"})

LEDGERS: dict[str, LedgerFactory] = {
    "sqlite": lambda scratch, clock: SQLiteLedger(scratch.path / "ledger.sqlite3", clock),
    "capturing": lambda scratch, clock: CapturingLedger(),
    "postgres": lambda scratch, clock: PostgresLedger(
        scratch.postgres_url(), table=f"attempts_{scratch.prefix}"
    ),
}


def _sqlite_limiter(scratch: Scratch) -> RateLimiter:
    """A SQLite limiter on a file of its own (a worker's fallback: a third of each limit)."""
    fallback = InProcessRateLimiter(scratch.clock, 1 / 3)
    return SQLiteRateLimiter(scratch.path / "limits.sqlite3", scratch.clock, fallback)


class _SettledRedisRateLimiter(RedisRateLimiter):
    """The Redis limiter with each settle, release and observe awaited to the server: it sends them
    in the background by design (a late correction only makes it careful a moment longer),
    and the suite checks the window's arithmetic, not that moment."""

    async def settle(self, lease: Lease, input_tokens: int, output_tokens: int) -> None:
        await super().settle(lease, input_tokens, output_tokens)
        await self.flush()

    async def release(self, lease: Lease) -> None:
        await super().release(lease)
        await self.flush()

    async def observe(self, provider: str, key_id: str, info: RateLimitInfo) -> None:
        await super().observe(provider, key_id, info)
        await self.flush()


def _redis_limiter(scratch: Scratch) -> RateLimiter:
    """A Redis limiter whose windows follow the test's clock (`server_clock=False`)."""
    clock = scratch.clock
    fallback = InProcessRateLimiter(clock)
    return _SettledRedisRateLimiter(
        scratch.redis_url(), clock, fallback, prefix=scratch.prefix, server_clock=False
    )


LIMITERS: dict[str, LimiterFactory] = {
    "in-process": lambda scratch: InProcessRateLimiter(scratch.clock),
    "recorded in-process": lambda scratch: RecordingRateLimiter(
        InProcessRateLimiter(scratch.clock)
    ),
    "sqlite": _sqlite_limiter,
    "redis": _redis_limiter,
}
#: How late usage may leave each limiter's window: its time slice (in-process 0.1 s).
LIMITER_SLICE: dict[str, float] = {"redis": 1.0}


async def close_all(stores: Sequence[BudgetStore]) -> None:
    """Close each distinct store once."""
    for store in {id(s): s for s in stores}.values():
        await store.aclose()

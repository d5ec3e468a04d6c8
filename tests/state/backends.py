"""The state backends the protocol suites run against: one entry per backend.

A new backend (Redis, Postgres) joins every protocol test by adding one factory here. A
factory gets a scratch directory (files, sockets) and the test's clock, and returns
`replicas` objects that share one state, as separate processes (or hosts) would: the
in-process store can only share by being the same object, while the SQLite store opens
the same file several times, each with its own connection and thread.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from engine.clock import Clock
from engine.state.budget import InProcessBudgetStore
from engine.state.ledger import SQLiteLedger
from engine.state.protocols import BudgetStore, Ledger, RateLimiter
from engine.state.ratelimit import InProcessRateLimiter
from engine.state.sqlite_budget import SQLiteBudgetStore
from engine.testing.ledger import CapturingLedger
from engine.testing.recording import RecordingRateLimiter

BudgetFactory = Callable[[Path, Clock, int], Sequence[BudgetStore]]
LedgerFactory = Callable[[Path, Clock], Ledger]
LimiterFactory = Callable[[Clock], RateLimiter]


def _in_process_budgets(scratch: Path, clock: Clock, replicas: int) -> Sequence[BudgetStore]:
    store = InProcessBudgetStore(clock)
    return [store] * replicas


def _sqlite_budgets(scratch: Path, clock: Clock, replicas: int) -> Sequence[BudgetStore]:
    return [SQLiteBudgetStore(scratch / "budgets.sqlite3", clock) for _ in range(replicas)]


BUDGETS: dict[str, BudgetFactory] = {
    "in-process": _in_process_budgets,
    "sqlite": _sqlite_budgets,
}

LEDGERS: dict[str, LedgerFactory] = {
    "sqlite": lambda scratch, clock: SQLiteLedger(scratch / "ledger.sqlite3", clock),
    "capturing": lambda scratch, clock: CapturingLedger(),
}

LIMITERS: dict[str, LimiterFactory] = {
    "in-process": InProcessRateLimiter,
    "recorded in-process": lambda clock: RecordingRateLimiter(InProcessRateLimiter(clock)),
}


async def close_all(stores: Sequence[BudgetStore]) -> None:
    """Close each distinct store once."""
    for store in {id(s): s for s in stores}.values():
        await store.aclose()

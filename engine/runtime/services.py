"""`Services`: the live state and collaborators every call of one engine shares.

A call (engine/runtime/call/) reads its plan from the call's data and everything that
outlives the call from here: adapters, the state backends (limiter, budget, client-key
budgets, cache, ledger), the clock and rng, select and features, breakers, strategy
state, stats, the keys rejected recently, the endpoints and compiled retry policies built so far.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from engine.clock import Clock
from engine.endpoints import Endpoint
from engine.messages import RateLimitInfo, Request
from engine.plan.compiled import Plan
from engine.plan.values import Features, KeyPlan, ProviderPlan, Selection
from engine.providers.base import Adapter
from engine.runtime.breaker import BreakerBoard
from engine.runtime.call.retry import RetryPolicies
from engine.runtime.clients import ClientBudgets
from engine.runtime.keys import KeyBook
from engine.runtime.observe import AttemptObserver
from engine.runtime.stats import Stats
from engine.runtime.strategies import StrategyState
from engine.runtime.workspaces import WorkspaceNames
from engine.state.announced import AnnouncedLimits
from engine.state.protocols import (
    BreakerSignal,
    BudgetStore,
    Ledger,
    RateLimiter,
    ResponseCache,
)

Selector = Callable[[Plan, str, Features], Selection]
Featurizer = Callable[[Request], Features]
CacheKey = Callable[[Request, str], str]


@dataclass(slots=True)
class Services:
    """The engine's live state and collaborators, shared by every request."""

    adapter_for: Callable[[str], Adapter]
    limiter: RateLimiter
    budget: BudgetStore
    cache: ResponseCache
    cache_key: CacheKey
    ledger: Ledger
    clock: Clock
    rng: random.Random
    select: Selector
    features: Featurizer
    breakers: BreakerBoard
    strategies: StrategyState
    stats: Stats
    #: Client-key budgets: a second budget store scoped by API key id (runtime/clients.py).
    clients: ClientBudgets
    #: Breaker openings shared with other replicas (None: breakers are this process's own).
    breaker_signal: BreakerSignal | None = None
    #: Keys rejected with 401 (cooling down, probed again) or rotated in the environment.
    keys: KeyBook = field(default_factory=lambda: KeyBook(os.environ))
    background: set[asyncio.Task[Any]] = field(default_factory=set)
    endpoints: dict[tuple[int, ...], tuple[tuple[Any, ...], Endpoint]] = field(default_factory=dict)
    keyless: dict[str, tuple[KeyPlan, ...]] = field(default_factory=dict)  # provider id -> label
    observer: AttemptObserver | None = None  # sees every try (tracing); runtime/observe.py
    #: Where the limits providers announce are kept for `validate` (None: nowhere).
    announced: AnnouncedLimits | None = None
    #: The route retry plans compiled into tenacity objects so far (call/retry.py).
    retries: RetryPolicies = field(init=False)
    #: Unlisted workspace names booked one by one, bounded (runtime/workspaces.py).
    names: WorkspaceNames = field(init=False)

    def __post_init__(self) -> None:
        self.retries = RetryPolicies(self.clock.sleep, self.rng)
        self.names = WorkspaceNames(self.clock)

    def announce(self, provider: str, key_id: str, info: RateLimitInfo) -> None:
        """Keep what a provider announced; the file is rewritten (off the loop) only when a
        figure changed."""
        if self.announced is not None and self.announced.observe(provider, key_id, info):
            self.spawn(asyncio.to_thread(self.announced.save))

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run bookkeeping that must finish even when the caller was cancelled."""
        task = asyncio.ensure_future(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def good_keys(self, provider: ProviderPlan) -> tuple[KeyPlan, ...]:
        """The provider's keys minus those recently rejected; keyless providers get a label."""
        if not provider.keys:  # the same label every call (so no new KeyPlan per call)
            label = self.keyless.get(provider.id)
            if label is None:
                label = self.keyless[provider.id] = (
                    KeyPlan(id=f"{provider.id}#none", secret=None),
                )
            return label
        book = self.keys
        if not book.cooling and not book.rotated:
            return provider.keys
        return book.usable(provider, self.clock.monotonic())

    def forget_key(self, key_id: str) -> None:
        """Drop the endpoints built with a key whose value was replaced (the old header)."""
        stale = [i for i, (parts, _) in self.endpoints.items() if parts[2].id == key_id]
        for ident in stale:
            del self.endpoints[ident]

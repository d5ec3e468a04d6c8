"""The composition root: the one module that wires config, compile, runtime, providers and state.

Everything else depends one way (config -> compile -> plan <- runtime); only here do the
parts meet, with plain imports that mypy and the import contracts can see:

    Engine.from_config(dir)   load + compile the directory, SQLite ledger, default backends
    Engine.from_data(m, r)    the same from dicts shaped like models.yaml and routes/*.yaml
    Engine.from_plan(plan)    a compiled plan; every collaborator may be injected
    for_workers(dir, n)       the server's engine for one of n worker processes
    default_engine()          the engine behind `engine.run` & co., built once per process

The `ENGINE_*` variables read here: ENGINE_CONFIG (config directory, default `.`),
ENGINE_POLICY (the default policy), ENGINE_LEDGER (the ledger file; default
`<config>/.engine/ledger.sqlite3`, the one place that default is written),
ENGINE_LEDGER_URL (postgresql://... moves the ledger to Postgres) and ENGINE_STATE_URL
(redis://... moves budgets, rate limits and the cache to a Redis every replica shares).

`Engine` here is the runtime's Engine plus these constructors, so the runtime itself
never imports config or compile, and never loads a module by name to get around that.
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

from engine.clock import Clock, SystemClock
from engine.compile.compiler import load_plan as _compile_dir
from engine.compile.source import DataSource, DirectorySource
from engine.errors import Diagnostic
from engine.plan.compiled import Plan
from engine.plan.features import features_of
from engine.plan.select import select
from engine.providers import get_adapter
from engine.providers.base import Adapter
from engine.result import Response, StreamEvent
from engine.runtime import engine as _runtime
from engine.runtime.breaker import BreakerBoard
from engine.runtime.clients import ClientBudgets
from engine.runtime.engine import RequestLike
from engine.runtime.services import CacheKey, Featurizer, Selector, Services
from engine.runtime.source import PlanSource, cache_size, with_default_policy
from engine.runtime.stats import Stats
from engine.runtime.strategies import StrategyState
from engine.state.announced import FILE_NAME as ANNOUNCED_FILE
from engine.state.announced import AnnouncedLimits
from engine.state.backends import HOLD_MARGIN_S, KEY_SCOPE, ledger_at, shared_state
from engine.state.budget import InProcessBudgetStore
from engine.state.cache import LRUCache, cache_key
from engine.state.key_limits import InProcessKeyLimiter, KeyLimiter
from engine.state.keys import KeyRegistry, SQLiteKeyRegistry
from engine.state.ledger import NullLedger
from engine.state.protocols import (
    BreakerSignal,
    BudgetStore,
    Ledger,
    RateLimiter,
    ResponseCache,
)
from engine.state.ratelimit import InProcessRateLimiter
from engine.state.sqlite_budget import SQLiteBudgetStore
from engine.state.sqlite_ratelimit import SQLiteRateLimiter

__all__ = [
    "Engine",
    "arun",
    "astream",
    "budgets_path",
    "client_budgets_path",
    "client_key_stores",
    "default_engine",
    "default_ledger_path",
    "explain",
    "for_workers",
    "limits_path",
    "load_plan",
    "run",
    "stream",
]


# -- the environment -----------------------------------------------------------------------


def config_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """`path`, else $ENGINE_CONFIG, else the current directory."""
    return Path(path if path is not None else os.environ.get("ENGINE_CONFIG", "."))


def default_ledger_path(config: str | os.PathLike[str]) -> Path:
    """`$ENGINE_LEDGER` if set, else `<config dir>/.engine/ledger.sqlite3`."""
    return Path(os.environ.get("ENGINE_LEDGER") or Path(config) / ".engine" / "ledger.sqlite3")


def budgets_path(config: str | os.PathLike[str]) -> Path:
    """The shared budget file of a multi-worker server: beside the ledger."""
    return default_ledger_path(config).with_name("budgets.sqlite3")


def announced_path(config: str | os.PathLike[str]) -> Path:
    """The limits providers announced in their headers (what `validate` compares declared
    limits with): beside the ledger."""
    return default_ledger_path(config).with_name(ANNOUNCED_FILE)


def limits_path(config: str | os.PathLike[str]) -> Path:
    """The shared rate-limit file of a multi-worker server: beside the ledger."""
    return default_ledger_path(config).with_name("limits.sqlite3")


def client_budgets_path(config: str | os.PathLike[str]) -> Path:
    """The client-key budget file of a multi-worker server: beside the workspaces' one."""
    return default_ledger_path(config).with_name("key-budgets.sqlite3")


def load_plan(config: Path) -> tuple[Plan, list[Diagnostic]]:
    """Validate and compile a config directory: the plan and its warnings; ConfigError."""
    plan, warnings = _compile_dir(config)
    return plan, list(warnings)


# -- services --------------------------------------------------------------------------------


def services(
    plan: Plan,
    *,
    rate_limiter: RateLimiter | None = None,
    budget: BudgetStore | None = None,
    client_budget: BudgetStore | None = None,
    cache: ResponseCache | None = None,
    ledger: Ledger | None = None,
    clock: Clock | None = None,
    rng: random.Random | None = None,
    seed: int = 0,
    selector: Selector | None = None,
    featurizer: Featurizer | None = None,
    cache_key: CacheKey | None = None,
    breaker_signal: BreakerSignal | None = None,
    announced: AnnouncedLimits | None = None,
) -> Services:
    """The live state for an engine over `plan`: the given backends, else in-process ones."""
    clock = clock or SystemClock()
    on_open = breaker_signal.publish if breaker_signal is not None else None
    return Services(
        adapter_for=get_adapter,  # replaced by the Engine's own lookup
        limiter=rate_limiter or InProcessRateLimiter(clock),
        budget=budget or InProcessBudgetStore(clock),  # restores from the ledger on start
        cache=cache or LRUCache(cache_size(plan), clock),
        cache_key=cache_key or _cache_key,
        ledger=ledger or NullLedger(),
        clock=clock,
        rng=rng or random.Random(seed),
        select=selector or select,
        features=featurizer or features_of,
        breakers=BreakerBoard(clock, on_open),
        strategies=StrategyState(seed),
        stats=Stats(),
        clients=ClientBudgets(client_budget or client_budget_store(clock)),
        breaker_signal=breaker_signal,
        announced=announced,
    )


_cache_key = cache_key


def client_budget_store(clock: Clock) -> InProcessBudgetStore:
    """The in-process store client-key budgets use by default (restored from the ledger)."""
    return InProcessBudgetStore(clock, scope=KEY_SCOPE, totals=True)


# -- the public Engine -----------------------------------------------------------------------


class Engine(_runtime.Engine):
    """Routes chat requests across providers per a compiled Plan. Build with a `from_*`."""

    @classmethod
    def from_plan(
        cls,
        plan: Plan,
        *,
        adapters: Mapping[str, Adapter] | None = None,
        source: PlanSource | None = None,
        default_policy: str | None = None,
        **injected: Any,
    ) -> Engine:
        """An engine over a compiled plan; every collaborator can be injected (tests, Redis):
        rate_limiter, budget, client_budget, cache, ledger, clock, rng, seed, selector,
        featurizer, cache_key, announced (where the limits providers announce are kept for
        `validate`).
        """
        return cls(
            plan,
            services(plan, **injected),
            source=source,
            adapters=adapters,
            adapter_factory=get_adapter,
            default_policy=default_policy,
        )

    @classmethod
    def from_config(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        ledger_path: str | None = None,
        default_policy: str | None = None,
        state_url: str | None = None,
        ledger_url: str | None = None,
        **injected: Any,
    ) -> Engine:
        """An engine from `models.yaml` + `routes/` in `path` (default $ENGINE_CONFIG or ./).

        The cost ledger is `ledger_url` (else $ENGINE_LEDGER_URL: postgresql://... or a
        SQLite path), else SQLite at `ledger_path`, else $ENGINE_LEDGER, else
        `<path>/.engine/ledger.sqlite3`; pass `ledger=` to use another backend. Live state
        (budgets, rate limits, cache) is in-process unless `state_url` (else
        $ENGINE_STATE_URL) names a Redis every replica shares. The policy used when a call
        names none is `default_policy`, else $ENGINE_POLICY, else the route file called
        `default`.
        """
        directory = config_dir(path)
        source = DirectorySource(directory)
        chosen = default_policy or os.environ.get("ENGINE_POLICY") or None
        plan = with_default_policy(source.reload(), chosen)  # fails before any file
        clock = injected["clock"] = injected.get("clock") or SystemClock()
        state = state_url or os.environ.get("ENGINE_STATE_URL")
        if state:
            margin = float(os.environ.get("ENGINE_HOLD_MARGIN_S") or HOLD_MARGIN_S)
            hold_s = call_timeout_s(plan) + margin
            shared = shared_state(state, clock, hold_s=hold_s)
            injected.setdefault("rate_limiter", shared.rate_limiter)
            injected.setdefault("budget", shared.budget)
            injected.setdefault("client_budget", shared.client_budget)
            injected.setdefault("cache", shared.cache)
            injected.setdefault("breaker_signal", shared.breaker_signal)
        if "ledger" not in injected:
            where = ledger_url or os.environ.get("ENGINE_LEDGER_URL") or ledger_path
            where = where or str(default_ledger_path(directory))
            injected["ledger"] = ledger_at(where, clock, spill_dir=directory / ".engine")
        injected.setdefault("announced", AnnouncedLimits(announced_path(directory), clock))
        return cls.from_plan(plan, source=source, default_policy=chosen, **injected)

    @classmethod
    def from_data(
        cls,
        models: Mapping[str, Any],
        routes: Mapping[str, Mapping[str, Any]] | None = None,
        **injected: Any,
    ) -> Engine:
        """Config as code: the same shapes as models.yaml and routes/*.yaml, as dicts."""
        source = DataSource(models, routes or {})
        return cls.from_plan(source.compile(), source=source, **injected)


def for_workers(
    config: Path,
    workers: int = 1,
    *,
    state_url: str | None = None,
    ledger_url: str | None = None,
) -> Engine:
    """The server's engine for one of `workers` processes.

    With a shared state URL ($ENGINE_STATE_URL) every worker, like every replica, uses
    it, and nothing is split. Without one, state that guards money and providers must
    still hold across the workers: budgets go to one SQLite file they all share
    (`budgets_path`), rate limits to another (`limits_path`: one window per key for all
    workers, whichever worker the kernel hands a connection to); a worker falls back to
    1/N of every limit only while that file cannot be used. Breakers, latency figures and
    the cache stay per worker: those only cost a little accuracy."""
    urls = {"state_url": state_url, "ledger_url": ledger_url}
    if workers <= 1 or state_url or os.environ.get("ENGINE_STATE_URL"):
        return Engine.from_config(config, **urls)
    clock = SystemClock()
    return Engine.from_config(
        config,
        **urls,
        clock=clock,
        budget=SQLiteBudgetStore(budgets_path(config), clock),  # seeded by the engine
        client_budget=SQLiteBudgetStore(
            client_budgets_path(config), clock, scope=KEY_SCOPE, totals=True
        ),
        rate_limiter=SQLiteRateLimiter(
            limits_path(config), clock, InProcessRateLimiter(clock, share=1.0 / workers)
        ),
    )


def client_key_stores(
    config: Path, plan: Plan, *, state_url: str | None = None, registry: bool = False
) -> tuple[KeyLimiter, KeyRegistry | None]:
    """The server's per-client-key limiter and, when the admin API is on (`registry`), its
    key registry: both in the Redis of `state_url` ($ENGINE_STATE_URL) when set, shared by
    every replica; else limits in process and the registry in a SQLite file beside the
    ledger (`keys.sqlite3`) that every worker of the host opens."""
    url = state_url or os.environ.get("ENGINE_STATE_URL")
    if url:  # imported here, as engine/state/backends.py says why
        from engine.state.redis_key_limits import RedisKeyLimiter
        from engine.state.redis_keys import RedisKeyRegistry

        hold_s = call_timeout_s(plan) + HOLD_MARGIN_S
        keys = RedisKeyRegistry(url) if registry else None
        return RedisKeyLimiter(url, hold_s=hold_s), keys
    path = default_ledger_path(config).with_name("keys.sqlite3")
    return InProcessKeyLimiter(SystemClock()), SQLiteKeyRegistry(path) if registry else None


def call_timeout_s(plan: Plan) -> float:
    """The longest any one attempt may take (the providers' and routes' total timeouts)."""
    totals = [p.timeouts.total_s for p in plan.providers.values()]
    totals += [r.timeouts.total_s for r in plan.routes() if r.timeouts is not None]
    return max(totals, default=600.0)


# -- the module-level API: one engine per process, built on first use ---------------------

_default: Engine | None = None
_default_lock = threading.Lock()


def default_engine() -> Engine:
    """The engine behind `engine.run` & co.: from $ENGINE_CONFIG or ./, built once."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Engine.from_config()
        return _default


def run(request: RequestLike, policy: str | None = None) -> Response:
    """Route one request with the default engine (sync)."""
    return default_engine().run(request, policy)


async def arun(request: RequestLike, policy: str | None = None) -> Response:
    """Route one request with the default engine."""
    return await default_engine().arun(request, policy)


def stream(request: RequestLike, policy: str | None = None) -> Iterator[StreamEvent]:
    """Stream one answer from the default engine (sync iterator)."""
    return default_engine().stream(request, policy)


def astream(request: RequestLike, policy: str | None = None) -> AsyncIterator[StreamEvent]:
    """Stream one answer from the default engine."""
    return default_engine().astream(request, policy)


def explain(request: RequestLike, policy: str | None = None) -> dict[str, Any]:
    """Why the default engine would route a request where it does."""
    return default_engine().explain(request, policy)

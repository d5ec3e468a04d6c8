"""The Engine: the one object behind `engine.run/arun/stream/astream` and the server.

It owns a compiled Plan (swapped whole on reload, so in-flight calls finish on the plan
they started with) and the live state shared by all calls (breakers, strategy state,
stats, rate limiter, budgets, cache, ledger). Each call is a `ChatCall` (call/chat.py);
this module only wires things together and offers the public surface: construction
(from a config directory, a Plan, or plain dicts), calls (async core, sync wrappers on a
private event-loop thread), introspection (explain, stats, health, registry queries),
and run-time changes (reload, add/remove providers and models).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import copy
import dataclasses
import importlib
import os
import random
import threading
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterator,
    Mapping,
)
from pathlib import Path
from typing import Any, TypeVar

from engine.clock import Clock, SystemClock
from engine.errors import (
    ConfigError,
    Diagnostic,
    RequestError,
    UnknownModelError,
    UnknownPolicyError,
)
from engine.messages import Request, parse_request
from engine.plan.features import features_of
from engine.plan.select import select
from engine.plan.values import ModelPlan, Plan, RoutePlan
from engine.providers.base import Adapter
from engine.result import Response, StreamEvent
from engine.runtime import health as _health
from engine.runtime import record as _record
from engine.runtime import registry
from engine.runtime.batch import Progress, run_batch
from engine.runtime.breaker import BreakerBoard
from engine.runtime.call.chat import ChatCall
from engine.runtime.conversation import Conversation
from engine.runtime.hooks import Hooks
from engine.runtime.record import ExternalCall
from engine.runtime.services import CacheKey, Featurizer, Selector, Services
from engine.runtime.stats import Stats
from engine.runtime.strategies import StrategyState
from engine.state.budget import InProcessBudgetStore
from engine.state.cache import LRUCache
from engine.state.cache import cache_key as default_cache_key
from engine.state.ledger import NullLedger, SQLiteLedger
from engine.state.protocols import BudgetStore, Ledger, RateLimiter, ResponseCache
from engine.state.ratelimit import InProcessRateLimiter

T = TypeVar("T")
RequestLike = Request | dict[str, Any]
Data = tuple[dict[str, Any], dict[str, Any], str]  # models, routes, source


def _load(module: str, name: str) -> Any:
    """A collaborator from another package, imported on first use (keeps imports acyclic)."""
    return getattr(importlib.import_module(module), name)


def _cache_size(plan: Plan) -> int:
    """One response cache serves every policy: it holds the largest `cache.max_entries` of
    the routes that enable caching (1000 when none does), so the setting is not ignored."""
    routes = [
        getattr(target, "route", target)  # a Leaf carries a RoutePlan; a Goto does not
        for tree in plan.policies.values()  # trees are opaque here: read them defensively
        for target in (
            getattr(tree, "default", tree),
            *(rule.target for rule in getattr(tree, "rules", ())),
        )
    ]
    sizes = [r.cache.max_entries for r in routes if isinstance(r, RoutePlan) and r.cache.enabled]
    return max(sizes, default=1000)


def _with_default_policy(plan: Plan, name: str | None) -> Plan:
    """The plan with `name` as its default policy; a name that is no policy is a ConfigError."""
    if name is None or name == plan.default_policy:
        return plan
    if name not in plan.policies:
        known = ", ".join(sorted(plan.policies)) or "none"
        raise ConfigError(
            [Diagnostic(f"default policy {name!r} (ENGINE_POLICY) is not a policy; known: {known}")]
        )
    return dataclasses.replace(plan, default_policy=name)


def _unbound_adapter(protocol: str) -> Adapter:
    raise RuntimeError("Services used outside an Engine")


def _config_dir(path: str | os.PathLike[str] | None) -> Path:
    return Path(path if path is not None else os.environ.get("ENGINE_CONFIG", "."))


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class _LoopThread:
    """A private event loop on a daemon thread: the sync API runs the async core here, so
    pooled connections survive between sync calls (asyncio.run would close them).

    A program that never calls `close()` still gets its connections closed (and the
    ledger flushed) at exit, through `on_exit` run on this loop."""

    def __init__(self, on_exit: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._on_exit = on_exit

    def _start(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="engine-sync", daemon=True).start()
                self._loop = loop
                atexit.register(self._at_exit)
            return self._loop

    def _at_exit(self) -> None:
        loop = self._loop
        if loop is not None and loop.is_running():
            future = asyncio.run_coroutine_threadsafe(self._on_exit(), loop)
            with contextlib.suppress(Exception):
                future.result(timeout=5)
        self.stop()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        loop = self._start()
        if _running_loop() is loop:
            coro.close()
            raise RuntimeError(
                "a sync engine call from inside the engine's own loop would "
                "deadlock; use the async form (arun/astream/abatch)"
            )
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # Ctrl-C in the caller cancels the call (and its upstream request)
            raise

    def stop(self) -> None:
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is not None:
            atexit.unregister(self._at_exit)
            loop.call_soon_threadsafe(loop.stop)


class Engine:
    """Routes chat requests across providers per a compiled Plan. Build with a `from_*`."""

    def __init__(
        self,
        plan: Plan,
        services: Services,
        data: Data | None = None,
        config_dir: Path | None = None,
        adapters: Mapping[str, Adapter] | None = None,
    ) -> None:
        self._plan = plan
        self._svc = services
        self._data = data
        self._config_dir = config_dir
        self._adapters: dict[str, Adapter] = dict(adapters or {})
        self._mutating = threading.Lock()
        self._sync = _LoopThread(self.aclose)
        self._keepalive: asyncio.Task[None] | None = None
        self._default_policy: str | None = None  # kept across reloads (ENGINE_POLICY)
        self._started = False  # the budget store has restored its spend from the ledger
        self._starting: asyncio.Future[None] | None = None
        self.hooks = Hooks()
        self.pings = _health.Pings(services.clock)
        services.adapter_for = self._adapter
        self._register_keys(plan)

    def _register_keys(self, plan: Plan) -> None:
        """Show every key in rate_limit_status before its first request."""
        for p in plan.providers.values():
            self._svc.limiter.register(p.id, self._svc.good_keys(p))

    async def _start(self) -> None:
        """Once, before the first call: the budget store restores spend from the ledger
        (`BudgetStore.restore`), so a restart does not forget this month's spending."""
        if self._starting is None:
            svc = self._svc
            self._starting = asyncio.ensure_future(svc.budget.restore(svc.ledger))
        await self._starting  # concurrent first calls all wait for the one restore
        self._started = True

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def from_plan(
        cls,
        plan: Plan,
        *,
        adapters: Mapping[str, Adapter] | None = None,
        rate_limiter: RateLimiter | None = None,
        budget: BudgetStore | None = None,
        cache: ResponseCache | None = None,
        ledger: Ledger | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        seed: int = 0,
        selector: Selector | None = None,
        featurizer: Featurizer | None = None,
        cache_key: CacheKey | None = None,
        data: Data | None = None,
        config_dir: Path | None = None,
    ) -> Engine:
        """An engine over a compiled plan; every collaborator can be injected (tests, Redis)."""
        clock = clock or SystemClock()
        services = Services(
            adapter_for=_unbound_adapter,  # replaced by the Engine's own lookup
            limiter=rate_limiter or InProcessRateLimiter(clock),
            budget=budget or InProcessBudgetStore(clock),
            cache=cache or LRUCache(_cache_size(plan), clock),
            cache_key=cache_key or default_cache_key,
            ledger=ledger or NullLedger(),
            clock=clock,
            rng=rng or random.Random(seed),
            select=selector or select,
            features=featurizer or features_of,
            breakers=BreakerBoard(clock),
            strategies=StrategyState(seed),
            stats=Stats(),
        )
        return cls(plan, services, data, config_dir, adapters)

    @classmethod
    def from_config(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        ledger_path: str | None = None,
        default_policy: str | None = None,
        **injected: Any,
    ) -> Engine:
        """An engine from `models.yaml` + `routes/` in `path` (default $ENGINE_CONFIG or ./).

        The cost ledger is SQLite at `ledger_path`, else $ENGINE_LEDGER, else
        `<path>/.engine/ledger.sqlite3`; pass `ledger=` to use another backend. The policy
        used when a call names none is `default_policy`, else $ENGINE_POLICY, else the
        route file called `default`.
        """
        directory = _config_dir(path)
        chosen = default_policy or os.environ.get("ENGINE_POLICY") or None
        plan = _with_default_policy(_load("engine.compile", "build_plan")(directory), chosen)
        if "ledger" not in injected:
            where = Path(
                ledger_path
                or os.environ.get("ENGINE_LEDGER")
                or directory / ".engine" / "ledger.sqlite3"
            )
            where.parent.mkdir(parents=True, exist_ok=True)
            clock = injected.get("clock") or SystemClock()
            injected["clock"] = clock
            injected["ledger"] = SQLiteLedger(str(where), clock)
        engine = cls.from_plan(plan, config_dir=directory, **injected)
        engine._default_policy = chosen
        return engine

    @classmethod
    def from_data(
        cls,
        models: Mapping[str, Any],
        routes: Mapping[str, Mapping[str, Any]] | None = None,
        **injected: Any,
    ) -> Engine:
        """Config as code: the same shapes as models.yaml and routes/*.yaml, as dicts."""
        data: Data = (copy.deepcopy(dict(models)), copy.deepcopy(dict(routes or {})), "<memory>")
        plan = _load("engine.compile", "build_plan_from_data")(data[0], data[1], source=data[2])
        return cls.from_plan(plan, data=data, **injected)

    # -- calls ----------------------------------------------------------------------------

    @property
    def plan(self) -> Plan:
        """The compiled plan new calls use (calls in flight keep the one they started on)."""
        return self._plan

    @property
    def cache(self) -> ResponseCache:
        """The response cache (`eng.cache.clear()` empties it)."""
        return self._svc.cache

    async def arun(self, request: RequestLike, policy: str | None = None) -> Response:
        """Route one request and return the answer (the async core everything else uses).

        `policy` (else `request.model`, else the default policy) names a policy or pins a
        `provider/name` model; `request.fallbacks` lists further targets.
        """
        req = parse_request(request)
        if policy is not None and not (isinstance(policy, str) and policy.strip()):
            _check_policy(policy)  # raises; the test above is its own, inlined
        if not self._started:
            await self._start()
        hooks = self.hooks
        if hooks.before:
            req = await hooks.before_request(req)
        try:
            response = await ChatCall(self._svc, self._plan, req, policy, False).run()
        except Exception as exc:
            if hooks.error:
                await hooks.on_error(req, exc)
            raise
        if hooks.after:
            response = await hooks.after_response(req, response)
        return response

    async def astream(
        self, request: RequestLike, policy: str | None = None
    ) -> AsyncGenerator[StreamEvent, None]:
        """Route one request and stream its answer; failover happens before the first token."""
        req = parse_request(request)
        _check_policy(policy)
        if not self._started:
            await self._start()
        hooks = self.hooks
        if hooks.before:
            req = await hooks.before_request(req)
        try:
            call = ChatCall(self._svc, self._plan, req, policy, True)
        except Exception as exc:  # unknown policy, no candidate, bad fallbacks
            if hooks.error:
                await hooks.on_error(req, exc)
            raise
        events = call.stream()
        try:
            async for event in events:
                yield event
        except Exception as exc:
            if hooks.error:
                await hooks.on_error(req, exc)
            raise
        finally:
            await events.aclose()  # a caller stopping early releases the upstream now
        if hooks.after and call.final is not None:
            await hooks.after_response(req, call.final)

    def run(self, request: RequestLike, policy: str | None = None) -> Response:
        """The sync form of `arun` (runs it on the engine's private loop thread)."""
        return self._sync.call(self.arun(request, policy))

    def stream(self, request: RequestLike, policy: str | None = None) -> Iterator[StreamEvent]:
        """The sync form of `astream`: a plain iterator of events."""
        events = self.astream(request, policy)

        async def step() -> StreamEvent:
            return await anext(events)

        try:
            while True:
                try:
                    event = self._sync.call(step())
                except StopAsyncIteration:
                    return
                yield event
        finally:
            self._sync.call(events.aclose())

    async def abatch(
        self,
        requests: list[RequestLike],
        policy: str | None = None,
        concurrency: int = 8,
        progress: Progress | None = None,
    ) -> list[Response | Exception]:
        """Many requests, at most `concurrency` at once; results in order, errors as values."""
        return await run_batch(lambda r: self.arun(r, policy), requests, concurrency, progress)

    def batch(
        self,
        requests: list[RequestLike],
        policy: str | None = None,
        concurrency: int = 8,
        progress: Progress | None = None,
    ) -> list[Response | Exception]:
        """The sync form of `abatch`."""
        return self._sync.call(self.abatch(requests, policy, concurrency, progress))

    def conversation(
        self, policy: str | None = None, system: str | None = None, **fields: Any
    ) -> Conversation:
        """A multi-turn chat whose history is kept for you."""
        return Conversation(self, policy, system, **fields)

    async def arecord(self, call: ExternalCall | None = None, **fields: Any) -> dict[str, Any]:
        """Record a call made outside the engine (stats, ledger, budget), priced from the plan:
        `await eng.arecord(model="openai/gpt-4o", input_tokens=..., output_tokens=...)`."""
        call = call or ExternalCall.parse(fields)
        if not self._started:
            await self._start()
        return await _record.record(self._svc, self._plan, call)

    def record(self, call: ExternalCall | None = None, **fields: Any) -> dict[str, Any]:
        """The sync form of `arecord`."""
        return self._sync.call(self.arecord(call, **fields))

    async def flush_ledger(self) -> None:
        """Wait until every ledger row recorded so far can be read back."""
        await self._svc.ledger.flush()

    # -- hooks ----------------------------------------------------------------------------

    def add_hook(self, name: str, fn: Callable[..., Awaitable[Any]]) -> None:
        """Register an async callable for before_request, after_response or on_error."""
        self.hooks.add(name, fn)

    def hook(
        self, name: str
    ) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
        """`@eng.hook("after_response")` as a decorator."""

        def register(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
            self.hooks.add(name, fn)
            return fn

        return register

    # -- introspection --------------------------------------------------------------------

    def explain(self, request: RequestLike, policy: str | None = None) -> dict[str, Any]:
        """Why a request would go where it goes: the compiled decision plus live state."""
        req = parse_request(request)
        _check_policy(policy)
        out = self._explain_target(req, policy or req.model or self._plan.default_policy)
        if req.fallbacks:  # what a failure of the first target hands over to, in order
            out["fallbacks"] = [self._explain_target(req, f) for f in req.fallbacks]
        return out

    def _explain_target(self, req: Request, target: str | None) -> dict[str, Any]:
        model = self._plan.models.get(target or "")
        if model is not None:  # a `provider/name` pin skips selection
            provider = self._plan.providers[model.provider]
            row = {
                "model": model.id,
                "provider": model.provider,
                "local": model.local,
                "enabled": provider.enabled,
                "disabled_reason": provider.disabled_reason,
            }
            return {
                "target": model.id,
                "policy": None,
                "pinned": True,
                "ranked": [row],
                "chain": [],
            }
        if target is None or target not in self._plan.policies:
            raise UnknownPolicyError(f"explain needs a policy or model id; got {target!r}")
        out: dict[str, Any] = dict(_load("engine.compile", "explain")(self._plan, target, req))
        out["live"] = self._live(req, target)
        return out

    def _live(self, req: Request, target: str) -> dict[str, Any]:
        sel = self._svc.select(self._plan, target, self._svc.features(req))
        s = self._svc
        return {
            "strategy": sel.route.strategy.name,
            "candidates": {
                c.model.id: {
                    "breaker": s.breakers.state(c.model.id),
                    "provider_breaker": s.breakers.state(c.model.provider),
                    "in_flight": s.strategies.inflight(c.model.id),
                    "measured_latency_ms": s.strategies.measured_latency(c.model.id),
                }
                for c in sel.ranked
            },
        }

    def stats(self) -> dict[str, Any]:
        """Totals and per provider / per model counters, latency percentiles and cost."""
        out = self._svc.stats.snapshot()
        out["cache"] = dict(self._svc.cache.stats())
        out["breakers"] = self._svc.breakers.snapshot()
        return out

    async def health(self, probe: bool = False, detail: bool = False) -> dict[str, Any]:
        """Each provider healthy / degraded / unhealthy / open / disabled with a reason, from
        breakers, error rates and pings (health.py); `probe` pings each provider now on a new
        connection; `detail` adds traffic figures and the ping record per provider."""
        plan, svc = self._plan, self._svc
        if probe:

            async def check(p: Any) -> dict[str, Any]:
                warm = self._adapter(p.protocol).warm
                return await _health.probe(p, plan, svc, warm, self.pings)

            found = await asyncio.gather(*(check(p) for p in plan.providers.values()))
            providers = dict(zip(plan.providers, found, strict=True))
        else:
            providers = {
                pid: _health.passive(p, plan, svc, self.pings) for pid, p in plan.providers.items()
            }
        if detail:
            traffic = svc.stats.snapshot()["providers"]
            for pid, view in providers.items():
                view.update(_health.detail(pid, traffic, self.pings))
        states = {v["status"] for v in providers.values()}
        usable = states & {"healthy", "degraded"}
        overall = (
            "unavailable"
            if not usable
            else "healthy"
            if states <= {"healthy", "disabled"}
            else "degraded"
        )
        return {"status": overall, "providers": providers}

    def is_available(self, provider: str) -> bool:
        """Would a call to this provider be attempted now (enabled, keys left, breaker shut)?"""
        p = self._provider(provider)
        return _health.passive(p, self._plan, self._svc)["status"] in ("healthy", "degraded")

    async def aspent(self, workspace: str) -> dict[str, float]:
        """A workspace's spend today and this month, open reservations included."""
        if not self._started:
            await self._start()
        return dict(await self._svc.budget.spent(workspace))

    def spent(self, workspace: str) -> dict[str, float]:
        """The sync form of `aspent` (runs it on the engine's private loop thread)."""
        return self._sync.call(self.aspent(workspace))

    def list_providers(self) -> list[str]:
        """Every configured provider id, enabled or not (see `health` for which are usable)."""
        return sorted(self._plan.providers)

    def available_providers(self) -> list[str]:
        """The providers a call would be attempted on right now."""
        return [p for p in self.list_providers() if self.is_available(p)]

    async def arate_limit_status(self, provider: str) -> dict[str, Any]:
        """Remaining / limit per key and how many requests are waiting, for one provider."""
        self._provider(provider)
        return dict(await self._svc.limiter.status(provider))

    def rate_limit_status(self, provider: str) -> dict[str, Any]:
        """The sync form of `arate_limit_status` (on the engine's private loop thread)."""
        self._provider(provider)
        return self._sync.call(self.arate_limit_status(provider))

    def _provider(self, provider: str) -> Any:
        p = self._plan.providers.get(provider)
        if p is None:
            raise UnknownModelError(f"unknown provider {provider!r}")
        return p

    # -- registry -------------------------------------------------------------------------

    def list_models(self, provider: str | None = None) -> list[str]:
        """Model ids, sorted; only one provider's when `provider` is given."""
        return registry.list_models(self._plan, provider)

    def model_config(self, model_id: str) -> ModelPlan:
        """One model's resolved configuration; UnknownModelError if there is none."""
        return registry.model_config(self._plan, model_id)

    def find_models(
        self,
        capability: str | None = None,
        max_input_price: float | None = None,
        max_output_price: float | None = None,
    ) -> list[ModelPlan]:
        """Enabled models with `capability` under the prices (USD per 1M), cheapest first."""
        return registry.find_models(self._plan, capability, max_input_price, max_output_price)

    def cheapest_model(self, capability: str | None = None) -> ModelPlan | None:
        """The cheapest enabled model with `capability` (unknown prices never win)."""
        return registry.cheapest_model(self._plan, capability)

    def fastest_model(
        self,
        capability: str | None = None,
        max_input_price: float | None = None,
        max_output_price: float | None = None,
    ) -> ModelPlan | None:
        """The fastest enabled model with `capability`: measured latency, else the prior."""
        return registry.fastest_model(
            self._plan,
            capability,
            max_input_price,
            max_output_price,
            self._svc.strategies.measured_latency,
        )

    # -- lifecycle ------------------------------------------------------------------------

    def _adapter(self, protocol: str) -> Adapter:
        adapter = self._adapters.get(protocol)
        if adapter is None:
            try:
                adapter = _load("engine.providers", "get_adapter")(protocol)
            except (KeyError, LookupError, ValueError) as exc:
                raise ConfigError(
                    [Diagnostic(f"no adapter for protocol {protocol!r}: {exc}")]
                ) from None
            self._adapters[protocol] = adapter
        return adapter

    async def warm(self, keep_alive_s: float | None = None) -> dict[str, str]:
        """Open a connection to every enabled provider; optionally keep them warm."""
        plan, svc = self._plan, self._svc
        enabled = [p for p in plan.providers.values() if p.enabled]

        async def one(p: Any) -> str:  # best effort: reported and recorded, never raised
            warm = self._adapter(p.protocol).warm
            failed = await _health.ping(p, plan, svc, warm, self.pings)
            return "ok" if failed is None else f"failed: {type(failed).__name__}"

        done = dict(
            zip(
                [p.id for p in enabled],
                await asyncio.gather(*(one(p) for p in enabled)),
                strict=True,
            )
        )
        if keep_alive_s is not None and self._keepalive is None:
            self._keepalive = asyncio.ensure_future(self._keep_warm(keep_alive_s))
        return done

    async def _keep_warm(self, interval_s: float) -> None:
        while True:
            await self._svc.clock.sleep(interval_s)
            await self.warm()

    async def aclose(self) -> None:
        """Stop keep-alive, flush the ledger, close adapters' connections."""
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None
        if self._svc.background:
            await asyncio.gather(*self._svc.background, return_exceptions=True)
        await self._svc.ledger.aclose()
        await self._svc.budget.aclose()
        await self._svc.limiter.aclose()
        for adapter in list(self._adapters.values()):
            await adapter.aclose()

    def close(self) -> None:
        """The sync form of `aclose`; also stops the private loop thread."""
        self._sync.call(self.aclose())
        self._sync.stop()

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- run-time changes -----------------------------------------------------------------

    def reload(self, plan: Plan | None = None) -> Plan:
        """Swap in a new plan atomically (default: recompile the config directory).

        Calls already running finish on the plan they started with; live state (breakers,
        measured latency, budgets, cache) carries over; rejected keys get another chance.
        """
        if plan is None:
            if self._config_dir is None:
                raise ConfigError([Diagnostic("reload() without a plan needs from_config")])
            plan = _load("engine.compile", "build_plan")(self._config_dir)
            self._data = None
        if not isinstance(plan, Plan):
            raise TypeError(f"reload expects a Plan, got {type(plan).__name__}")
        plan = _with_default_policy(plan, self._default_policy)
        self._svc.bad_keys.clear()
        self._register_keys(plan)
        self._svc.cache.resize(_cache_size(plan))
        self._plan = plan
        return plan

    def add_provider(self, provider_id: str, spec: Mapping[str, Any]) -> None:
        """Add a provider (models.yaml `providers:` entry shape); validated, then swapped in."""

        def change(models: dict[str, Any], _routes: dict[str, Any]) -> None:
            providers = models.setdefault("providers", {})
            if provider_id in providers:
                raise ConfigError(
                    [
                        Diagnostic(
                            f"provider {provider_id!r} already exists",
                            path=f"providers.{provider_id}",
                        )
                    ]
                )
            providers[provider_id] = dict(spec)

        self._mutate(change)

    def remove_provider(self, provider_id: str) -> None:
        """Remove a provider and its models; fails (nothing changes) if a route needs them."""

        def change(models: dict[str, Any], _routes: dict[str, Any]) -> None:
            if provider_id not in models.get("providers", {}):
                raise UnknownModelError(f"unknown provider {provider_id!r}")
            del models["providers"][provider_id]
            for mid in [m for m in models.get("models", {}) if m.startswith(provider_id + "/")]:
                del models["models"][mid]

        self._mutate(change)

    def add_model(self, model_id: str, spec: Mapping[str, Any]) -> None:
        """Add a model (models.yaml `models:` entry shape); validated, then swapped in."""

        def change(models: dict[str, Any], _routes: dict[str, Any]) -> None:
            table = models.setdefault("models", {})
            if model_id in table:
                raise ConfigError(
                    [Diagnostic(f"model {model_id!r} already exists", path=f"models.{model_id}")]
                )
            table[model_id] = dict(spec)

        self._mutate(change)

    def remove_model(self, model_id: str) -> None:
        """Remove a model; fails (nothing changes) if a route still names it."""

        def change(models: dict[str, Any], _routes: dict[str, Any]) -> None:
            if model_id not in models.get("models", {}):
                raise UnknownModelError(f"unknown model {model_id!r}")
            del models["models"][model_id]

        self._mutate(change)

    def _mutate(self, change: Callable[[dict[str, Any], dict[str, Any]], None]) -> None:
        with self._mutating:
            models, routes, source = copy.deepcopy(self._source())
            change(models, routes)
            plan = _load("engine.compile", "build_plan_from_data")(models, routes, source=source)
            self._data = (models, routes, source)
            self.reload(plan)

    def _source(self) -> Data:
        if self._data is not None:
            return self._data
        if self._config_dir is None:
            raise ConfigError(
                [
                    Diagnostic(
                        "this engine was built from a Plan; build it with from_data or from_config "
                        "to change providers and models at run time"
                    )
                ]
            )
        return _read_config(self._config_dir)


def _read_config(directory: Path) -> Data:
    """models.yaml and routes/*.yaml as plain data, for run-time changes to recompile."""
    import yaml

    def read(p: Path) -> Any:
        with p.open(encoding="utf-8") as f:
            return yaml.safe_load(f) or {}

    models = read(directory / "models.yaml")
    routes_dir = directory / "routes"
    routes = (
        {p.stem: read(p) for p in sorted(routes_dir.glob("*.y*ml"))} if routes_dir.is_dir() else {}
    )
    return models, routes, str(directory)


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


def _check_policy(policy: object) -> None:
    """`policy=""` or `policy=5` is a caller's mistake, not a request for the default."""
    if policy is not None and (not isinstance(policy, str) or not policy.strip()):
        raise RequestError(f"policy must be a policy name or provider/name, got {policy!r}")


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

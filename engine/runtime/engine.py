"""The Engine: the one object behind `engine.run/arun/stream/astream` and the server.

It owns a compiled Plan (swapped whole on reload, so in-flight calls finish on the plan
they started with) and the live state shared by all calls (`Services`: breakers, strategy
state, stats, rate limiter, budgets, cache, ledger). Each call is a `ChatCall`
(call/chat.py). It is given everything it uses: the plan, its services, the adapters, and
a `PlanSource` for run-time changes. Building one from a config directory or from dicts,
choosing the state backends and reading `ENGINE_*` variables is engine.assemble's job,
so this module never imports config, compile, yaml or the environment.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Mapping
from typing import Any

from engine.embedding import EmbeddingRequest, EmbeddingResponse, parse_embedding_request
from engine.errors import ConfigError, Diagnostic, RequestError
from engine.messages import Request, parse_request
from engine.plan.compiled import Plan
from engine.providers.base import Adapter
from engine.result import Response, StreamEvent
from engine.runtime import health as _health
from engine.runtime import record as _record
from engine.runtime.adapters import AdapterFactory, Adapters, no_factory
from engine.runtime.batch import Progress, run_batch
from engine.runtime.call.chat import ChatCall
from engine.runtime.call.embed import EmbedCall
from engine.runtime.catalog import Catalog
from engine.runtime.clients import ClientBudgets
from engine.runtime.conversation import Conversation
from engine.runtime.explain import explain_target
from engine.runtime.hooks import Hooks
from engine.runtime.loop import LoopThread
from engine.runtime.observe import AttemptObserver
from engine.runtime.record import ExternalCall
from engine.runtime.services import Services
from engine.runtime.source import PlanSource, PooledSpend, cache_size, with_default_policy
from engine.state.protocols import ResponseCache

RequestLike = Request | dict[str, Any]


class Engine(Catalog):
    """Routes chat requests across providers per a compiled Plan (engine.assemble builds it)."""

    def __init__(
        self,
        plan: Plan,
        services: Services,
        *,
        source: PlanSource | None = None,
        adapters: Mapping[str, Adapter] | None = None,
        adapter_factory: AdapterFactory = no_factory,
        default_policy: str | None = None,
    ) -> None:
        self._default_policy = default_policy  # kept across reloads (ENGINE_POLICY)
        self._plan = with_default_policy(plan, default_policy)
        self._svc = services
        self._source = source
        self._adapters = Adapters(adapters, adapter_factory)
        self._mutating = threading.Lock()
        self._sync = LoopThread(self.aclose)
        self._keepalive: asyncio.Task[None] | None = None
        self._started = False  # the budget store has restored its spend from the ledger
        self._starting: asyncio.Future[None] | None = None
        self.hooks = Hooks()
        self.pings = _health.Pings(services.clock)
        services.adapter_for = self._adapters.get
        self._register_keys(self._plan)

    def _register_keys(self, plan: Plan) -> None:
        """Show every key in rate_limit_status before its first request."""
        for p in plan.providers.values():
            self._svc.limiter.register(p.id, self._svc.good_keys(p))

    async def _start(self) -> None:
        """Once, before the first call: the budget store restores spend from the ledger
        (`BudgetStore.restore`), so a restart does not forget this month's spending."""
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._restore_and_listen())
        await self._starting  # concurrent first calls all wait for the one restore
        self._started = True

    async def _restore_and_listen(self) -> None:
        svc = self._svc
        await svc.budget.restore(PooledSpend(svc.ledger, self._plan.wallets))
        await svc.clients.restore(svc.ledger, svc.clock)
        if svc.breaker_signal is not None:
            await svc.breaker_signal.start(svc.breakers.remote_open)

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
            _check_policy(policy)  # raises
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

    async def aembed(
        self, request: EmbeddingRequest | dict[str, Any], policy: str | None = None
    ) -> EmbeddingResponse:
        """Embed texts through the same routing, failover, limits, budgets and ledger as a
        chat call (`request`: OpenAI's embeddings body; `policy` as for `arun`)."""
        req = parse_embedding_request(request)
        if not self._started:
            await self._start()
        return await EmbedCall(self._svc, self._plan, req, policy).run()

    def embed(
        self, request: EmbeddingRequest | dict[str, Any], policy: str | None = None
    ) -> EmbeddingResponse:
        """`aembed`, from synchronous code."""
        return self._sync.call(self.aembed(request, policy))

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
        return self._sync.iterate(self.astream(request, policy))

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

    def set_observer(self, observer: AttemptObserver | None) -> None:
        """Install (or remove, with None) the observer every try reports to (tracing)."""
        self._svc.observer = observer

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
        plan, svc = self._plan, self._svc
        out = explain_target(plan, svc, req, policy or req.model or plan.default_policy)
        if req.fallbacks:  # what a failure of the first target hands over to, in order
            out["fallbacks"] = [explain_target(plan, svc, req, f) for f in req.fallbacks]
        return out

    def stats(self, *, samples: bool = False) -> dict[str, Any]:
        """Totals and per provider / per model counters, latency percentiles and cost;
        `samples`: latency samples instead of percentiles, for engine.runtime.stats.merge."""
        out = self._svc.stats.export() if samples else self._svc.stats.snapshot()
        out["cache"] = dict(self._svc.cache.stats())
        out["breakers"] = self._svc.breakers.snapshot()
        return out

    async def health(self, probe: bool = False, detail: bool = False) -> dict[str, Any]:
        """Each provider healthy / degraded / unhealthy / open / disabled with a reason, from
        breakers, error rates and pings (health.py); `probe` pings each provider now on a new
        connection; `detail` adds traffic figures and the ping record per provider."""
        return await _health.report(
            self._plan, self._svc, self.pings, self._adapters.warm, probe, detail
        )

    async def aspent(self, workspace: str) -> dict[str, float]:
        """A workspace's spend today and this month, open reservations included (for a
        workspace in the `"*"` pool, the pool's)."""
        if not self._started:
            await self._start()
        return dict(await self._svc.budget.spent(self._plan.wallets.bucket(workspace)))

    async def aclient_spent(self, client: str) -> dict[str, float]:
        """A client key's spend today, this month and all time, open holds included."""
        if not self._started:
            await self._start()
        return dict(await self._svc.clients.spent(client))

    @property
    def clients(self) -> ClientBudgets:
        """Client-key budgets: `clients.set({key id: ClientBudget})` (the server's keys)."""
        return self._svc.clients

    def spent(self, workspace: str) -> dict[str, float]:
        """The sync form of `aspent` (runs it on the engine's private loop thread)."""
        return self._sync.call(self.aspent(workspace))

    # -- lifecycle ------------------------------------------------------------------------

    async def warm(self, keep_alive_s: float | None = None) -> dict[str, str]:
        """Open a connection to every enabled provider; optionally keep them warm."""
        done = await _health.warm_all(self._plan, self._svc, self.pings, self._adapters.warm)
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
        await self._svc.clients.store.aclose()
        await self._svc.limiter.aclose()
        if self._svc.breaker_signal is not None:
            await self._svc.breaker_signal.aclose()
        await self._adapters.aclose()

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
            if self._source is None:
                raise ConfigError([Diagnostic("reload() without a plan needs from_config")])
            plan = self._source.reload()
        if not isinstance(plan, Plan):
            raise TypeError(f"reload expects a Plan, got {type(plan).__name__}")
        plan = with_default_policy(plan, self._default_policy)
        self._svc.keys.clear()
        self._register_keys(plan)
        self._svc.cache.resize(cache_size(plan))
        self._plan = plan
        return plan

    def add_provider(self, provider_id: str, spec: Mapping[str, Any]) -> None:
        """Add a provider (models.yaml `providers:` entry shape); validated, then swapped in."""
        self._change(lambda source: source.add_provider(provider_id, spec))

    def remove_provider(self, provider_id: str) -> None:
        """Remove a provider and its models; fails (nothing changes) if a route needs them."""
        self._change(lambda source: source.remove_provider(provider_id))

    def add_model(self, model_id: str, spec: Mapping[str, Any]) -> None:
        """Add a model (models.yaml `models:` entry shape); validated, then swapped in."""
        self._change(lambda source: source.add_model(model_id, spec))

    def remove_model(self, model_id: str) -> None:
        """Remove a model; fails (nothing changes) if a route still names it."""
        self._change(lambda source: source.remove_model(model_id))

    def _change(self, change: Callable[[PlanSource], Plan]) -> None:
        with self._mutating:
            self.reload(change(self._changeable()))

    def _changeable(self) -> PlanSource:
        if self._source is None:
            why = "this engine was built from a Plan; build it with from_data or from_config"
            raise ConfigError([Diagnostic(f"{why} to change providers and models at run time")])
        return self._source


def _check_policy(policy: object) -> None:
    """`policy=""` or `policy=5` is a caller's mistake, not a request for the default."""
    if policy is not None and (not isinstance(policy, str) or not policy.strip()):
        raise RequestError(f"policy must be a policy name or provider/name, got {policy!r}")

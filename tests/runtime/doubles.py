"""Test doubles for the runtime's collaborators: a scripted adapter, a selector over
hand-built plans, and small in-memory state backends that record what they were asked.

They let the runtime's tests drive `Engine` through its public API with FakeClock and no
network, independently of the compiler, the providers and the state backends.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine import Engine
from engine.endpoints import Endpoint
from engine.errors import BudgetExceededError, NoCandidateError, RateLimitedError
from engine.messages import Chunk, ProviderResponse, RateLimitInfo, Request, Usage
from engine.plan.compiled import Plan
from engine.plan.tree import Leaf, PolicyTree
from engine.plan.values import (
    Features,
    KeyPlan,
    ModelPlan,
    ProviderPlan,
    RoutePlan,
    Scored,
    Selection,
    StrategyPlan,
)
from engine.secrets import Secret
from engine.state.protocols import Lease, LedgerRow, Reservation
from engine.testing.clock import FakeClock

Outcome = BaseException | str | ProviderResponse


@dataclass
class Call:
    model: str
    key_id: str
    stream: bool
    request: Request


class ScriptedAdapter:
    """Answers per upstream model from a script of outcomes; the last one repeats."""

    protocol = "fake"

    def __init__(self, scripts: Mapping[str, Sequence[Outcome]] | None = None) -> None:
        self.scripts = {k: list(v) for k, v in (scripts or {}).items()}
        self.calls: list[Call] = []
        self.gate: asyncio.Event | None = None  # when set, calls wait for it
        self.stream_chunks: dict[str, list[Chunk | BaseException]] = {}
        self.warmed: list[str] = []
        self.closed = False
        self.latency_s: dict[str, float] = {}  # per model, advanced on `clock`
        self.clock: FakeClock | None = None

    def _next(self, model: str) -> Outcome:
        script = self.scripts.get(model, ["ok"])
        return script.pop(0) if len(script) > 1 else script[0]

    async def complete(self, request: Request, endpoint: Endpoint) -> ProviderResponse:
        self.calls.append(Call(endpoint.upstream_model, endpoint.key_id, False, request))
        if self.clock is not None:
            self.clock.advance(self.latency_s.get(endpoint.upstream_model, 0.0))
        if self.gate is not None:
            await self.gate.wait()
        out = self._next(endpoint.upstream_model)
        if isinstance(out, BaseException):
            raise out
        if isinstance(out, ProviderResponse):
            return out
        return ProviderResponse(
            content=f"{out} from {endpoint.upstream_model}",
            usage=Usage(10, 5),
            upstream_model=endpoint.upstream_model,
        )

    async def stream(self, request: Request, endpoint: Endpoint) -> AsyncIterator[Chunk]:
        self.calls.append(Call(endpoint.upstream_model, endpoint.key_id, True, request))
        out = self._next(endpoint.upstream_model)
        if isinstance(out, BaseException):
            raise out
        chunks = self.stream_chunks.get(endpoint.upstream_model) or [
            Chunk(content="hel"),
            Chunk(content="lo"),
            Chunk(finish_reason="stop", usage=Usage(10, 2)),
        ]
        for c in chunks:
            await asyncio.sleep(0)
            if isinstance(c, BaseException):
                raise c
            yield c

    async def warm(self, endpoint: Endpoint) -> None:
        self.warmed.append(endpoint.provider)

    async def aclose(self) -> None:
        self.closed = True

    def called(self) -> list[str]:
        return [c.model for c in self.calls]


def model(
    mid: str,
    *,
    caps: Sequence[str] = ("chat",),
    window: int = 8000,
    max_output: int = 1000,
    price: tuple[float | None, float | None] = (1.0, 2.0),
    latency: float = 500.0,
) -> ModelPlan:
    provider, _, name = mid.partition("/")
    return ModelPlan(
        id=mid,
        provider=provider,
        upstream=name,
        capabilities=frozenset(caps),
        context_window=window,
        max_output=max_output,
        input_price=price[0],
        output_price=price[1],
        quality=0.5,
        latency_ms=latency,
        local=False,
    )


def provider(pid: str, *, keys: int = 1, enabled: bool = True) -> ProviderPlan:
    return ProviderPlan(
        id=pid,
        protocol="fake",
        base_url="http://127.0.0.1:9",
        keys=tuple(KeyPlan(f"{pid}#{i}", Secret(f"sk-test-{pid}-{i}")) for i in range(keys)),
        enabled=enabled,
        disabled_reason=None if enabled else "switched off",
    )


def route(policy: str, candidates: Sequence[str], **kw: Any) -> RoutePlan:
    strategy = kw.pop("strategy", StrategyPlan("ordered"))
    return RoutePlan(policy=policy, candidates=tuple(candidates), strategy=strategy, **kw)


def make_plan(
    models: Sequence[ModelPlan],
    routes: Sequence[RoutePlan],
    providers: Sequence[ProviderPlan] | None = None,
) -> Plan:
    provs = providers or [provider(p) for p in sorted({m.provider for m in models})]
    return Plan(
        models={m.id: m for m in models},
        providers={p.id: p for p in provs},
        policies={r.policy: _tree(r) for r in routes},
        default_policy=routes[0].policy if routes else None,
    )


def _tree(route_plan: RoutePlan) -> PolicyTree:
    """A policy with no rules: its one leaf is the route (the reference selector reads it)."""
    return PolicyTree(route_plan.policy, (), Leaf(route_plan, (), (), (), "static"), ())


def features_of(request: Request) -> Features:
    text = sum(len(m.text()) for m in request.messages)
    return Features(
        capabilities=frozenset(request.capabilities),
        input_tokens=max(1, text // 4),
        output_tokens=request.output_limit,
        workspace=request.metadata.get("workspace"),
        metadata=request.metadata,
        budget_usd=request.budget_usd,
    )


def select(plan: Plan, policy: str, features: Features) -> Selection:
    """A reference selector: the route's candidates minus those lacking a capability."""
    leaf = plan.policies[policy].default
    assert isinstance(leaf, Leaf)
    route_plan = leaf.route
    eliminated: list[tuple[str, str]] = []

    def kept(ids: Sequence[str]) -> tuple[Scored, ...]:
        out = []
        for mid in ids:
            m = plan.models[mid]
            if not features.capabilities <= m.capabilities:
                eliminated.append((mid, "capabilities"))
                continue
            tin, cap = features.input_tokens, features.output_tokens
            expected = cap or route_plan.default_max_tokens
            out.append(Scored(m, 0.0, m.cost(tin, expected), m.cost(tin, cap or m.max_output)))
        return tuple(out)

    ranked = kept(route_plan.candidates)
    chain = kept([c for c in route_plan.chain if c not in route_plan.candidates])
    if not ranked and not chain:
        raise NoCandidateError(f"no candidate for {policy}", dict(eliminated))
    return Selection(policy, None, (policy,), route_plan, ranked, tuple(eliminated), chain)


class Limiter:
    """Hands out the first key; `exhausted` providers raise RateLimitedError."""

    def __init__(self) -> None:
        self.exhausted: set[str] = set()
        self.open: int = 0
        self.settled: list[tuple[str, int, int]] = []
        self.observed: list[RateLimitInfo] = []
        self.released: list[str] = []

    def try_acquire_nowait(
        self, provider: str, keys: Sequence[KeyPlan], tin: int, tout: int
    ) -> Lease | None:
        return None

    async def acquire(
        self, provider: str, keys: Sequence[KeyPlan], tin: int, tout: int, max_wait_s: float
    ) -> Lease:
        if provider in self.exhausted:
            raise RateLimitedError("local limit", provider=provider)
        self.open += 1
        return Lease(provider, keys[0], tin, tout)

    async def settle(self, lease: Lease, tin: int, tout: int) -> None:
        self.open -= 1
        self.settled.append((lease.key.id, tin, tout))

    async def release(self, lease: Lease) -> None:
        self.open -= 1
        self.released.append(lease.key.id)

    async def observe(self, provider: str, key_id: str, info: RateLimitInfo) -> None:
        self.observed.append(info)

    def register(self, provider: str, keys: Sequence[KeyPlan]) -> None:
        pass

    async def status(self, provider: str) -> dict[str, Any]:
        return {"provider": provider, "open_leases": self.open}

    async def aclose(self) -> None:
        pass


class Budget:
    """Daily limits per workspace, reservations counted until settled or released."""

    def __init__(self) -> None:
        self.spent_usd: dict[str, float] = {}
        self.reserved: dict[int, Reservation] = {}
        self.token = 0

    async def reserve(
        self, workspace: str, amount: float, daily: float | None, monthly: float | None
    ) -> Reservation:
        held = sum(r.amount_usd for r in self.reserved.values() if r.workspace == workspace)
        total = self.spent_usd.get(workspace, 0.0) + held + amount
        if daily is not None and total > daily:
            raise BudgetExceededError(f"workspace {workspace} over its daily budget")
        self.token += 1
        r = Reservation(workspace, amount, self.token)
        self.reserved[r.token] = r
        return r

    async def settle(self, r: Reservation, actual: float) -> None:
        del self.reserved[r.token]
        self.spent_usd[r.workspace] = self.spent_usd.get(r.workspace, 0.0) + actual

    async def release(self, r: Reservation) -> None:
        del self.reserved[r.token]

    async def spent(self, workspace: str) -> dict[str, float]:
        return {"day": self.spent_usd.get(workspace, 0.0)}

    async def restore(self, source: Any) -> None:
        pass

    async def aclose(self) -> None:
        pass


class Cache:
    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    async def get(self, key: str) -> Any | None:
        return self.data.get(key)

    async def put(self, key: str, value: Any, ttl_s: float) -> None:
        self.data[key] = value

    async def clear(self) -> None:
        self.data.clear()

    def resize(self, max_entries: int) -> None:
        pass

    def stats(self) -> dict[str, int]:
        return {"entries": len(self.data)}


def cache_key(request: Request, policy: str) -> str:
    return policy + request.model_dump_json(include={"messages", "max_tokens"})


@dataclass
class Ledger:
    rows: list[LedgerRow] = field(default_factory=list)
    closed: bool = False

    def record(self, row: LedgerRow) -> None:
        self.rows.append(row)

    async def flush(self) -> None:
        return None

    async def aclose(self) -> None:
        self.closed = True

    async def totals(self, workspace: str | None, since: float, by: str) -> list[dict[str, Any]]:
        return []

    async def daily(self, workspace: str | None, since: float) -> list[dict[str, Any]]:
        return []

    async def spend_since(self, since: float) -> list[tuple[str, str, float]]:
        return []


@dataclass
class Rig:
    """An engine over a hand-built plan plus handles on every double it was given."""

    engine: Engine
    adapter: ScriptedAdapter
    clock: FakeClock
    limiter: Limiter
    budget: Budget
    cache: Cache
    ledger: Ledger


def rig(plan: Plan, adapter: ScriptedAdapter | None = None, seed: int = 0) -> Rig:
    adapter = adapter or ScriptedAdapter()
    clock, limiter, budget, cache, ledger = FakeClock(), Limiter(), Budget(), Cache(), Ledger()
    engine = Engine.from_plan(
        plan,
        adapters={"fake": adapter},
        rate_limiter=limiter,
        budget=budget,
        cache=cache,
        ledger=ledger,
        clock=clock,
        seed=seed,
        selector=select,
        featurizer=features_of,
        cache_key=cache_key,
    )
    return Rig(engine, adapter, clock, limiter, budget, cache, ledger)


def ask(text: str = "hello", **kw: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], **kw}

"""Test doubles for the runtime's collaborators: the shipped scripted adapter with
per-model scripts, a selector over hand-built plans, and the shipped recording limiter and
budget store and capturing ledger (engine.testing), with the views these tests read.

They let the runtime's tests drive `Engine` through its public API with FakeClock and no
network, independently of the compiler, the providers and the state backends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine import Engine
from engine.endpoints import Endpoint
from engine.errors import NoCandidateError, RateLimitedError
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
from engine.state.budget import InProcessBudgetStore
from engine.state.cache import LRUCache
from engine.state.protocols import Lease, Reservation
from engine.testing import adapter as testing_adapter
from engine.testing.clock import FakeClock
from engine.testing.ledger import CapturingLedger
from engine.testing.recording import RecordingBudgetStore, RecordingRateLimiter

Outcome = BaseException | str | ProviderResponse


class ScriptedAdapter(testing_adapter.ScriptedAdapter):
    """The shipped ScriptedAdapter, answering per upstream model from a script of
    outcomes (the last one repeats), with a gate, simulated latency and stream chunks."""

    def __init__(self, scripts: Mapping[str, Sequence[Outcome]] | None = None) -> None:
        super().__init__(self._answer, protocol="fake")
        self.scripts = {k: list(v) for k, v in (scripts or {}).items()}
        self.gate: asyncio.Event | None = None  # when set, non-streaming calls wait for it
        self.stream_chunks: dict[str, list[Chunk | BaseException]] = {}
        self.latency_s: dict[str, float] = {}  # per model, advanced on `clock`
        self.clock: FakeClock | None = None

    def _next(self, model: str) -> Outcome:
        script = self.scripts.get(model, ["ok"])
        return script.pop(0) if len(script) > 1 else script[0]

    async def _answer(self, request: Request, endpoint: Endpoint) -> testing_adapter.Outcome:
        model, streaming = endpoint.upstream_model, self.calls[-1].stream
        if not streaming:
            if self.clock is not None:
                self.clock.advance(self.latency_s.get(model, 0.0))
            if self.gate is not None:
                await self.gate.wait()
        out = self._next(model)
        if isinstance(out, (BaseException, ProviderResponse)):
            return out
        if streaming:
            return self.stream_chunks.get(model) or [
                Chunk(content="hel"),
                Chunk(content="lo"),
                Chunk(finish_reason="stop", usage=Usage(10, 2)),
            ]
        return ProviderResponse(
            content=f"{out} from {model}", usage=Usage(10, 5), upstream_model=model
        )

    def called(self) -> list[str]:
        return self.models()


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
    return PolicyTree(
        route_plan.policy, (), Leaf(route=route_plan, candidates=(), chain=(), eliminated=()), ()
    )


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


class _FirstKey:
    """A rate limiter that hands out the first key; `exhausted` providers are refused."""

    def __init__(self) -> None:
        self.exhausted: set[str] = set()

    def try_acquire_nowait(
        self, provider: str, keys: Sequence[KeyPlan], tin: int, tout: int
    ) -> Lease | None:
        return None  # every acquisition goes through `acquire`

    async def acquire(
        self, provider: str, keys: Sequence[KeyPlan], tin: int, tout: int, max_wait_s: float
    ) -> Lease:
        if provider in self.exhausted:
            raise RateLimitedError("local limit", provider=provider)
        return Lease(provider, keys[0], tin, tout)

    async def settle(self, lease: Lease, tin: int, tout: int) -> None:
        pass

    async def release(self, lease: Lease) -> None:
        pass

    async def observe(self, provider: str, key_id: str, info: RateLimitInfo) -> None:
        pass

    def register(self, provider: str, keys: Sequence[KeyPlan]) -> None:
        pass

    async def status(self, provider: str) -> dict[str, Any]:
        return {"provider": provider}

    async def aclose(self) -> None:
        pass


class Limiter(RecordingRateLimiter):
    """The shipped recording limiter around `_FirstKey`, with the views tests read."""

    def __init__(self) -> None:
        self.first_key = _FirstKey()
        super().__init__(self.first_key)

    @property
    def exhausted(self) -> set[str]:
        return self.first_key.exhausted

    @property
    def open(self) -> int:
        return self.open_leases

    @property
    def settled(self) -> list[tuple[str, int, int]]:
        return [(c.args[0].key.id, c.args[1], c.args[2]) for c in self.called("settle")]

    @property
    def released(self) -> list[str]:
        return [c.args[0].key.id for c in self.called("release")]

    @property
    def observed(self) -> list[RateLimitInfo]:
        return [c.args[2] for c in self.called("observe")]


class Budget(RecordingBudgetStore):
    """The shipped recording store around the in-process one, with the views tests read."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(InProcessBudgetStore(clock))

    @property
    def reserved(self) -> dict[int, Reservation]:
        """Open reservations by token."""
        closed = {id(c.args[0]) for c in self.calls if c.method in ("settle", "release")}
        made = [c.result for c in self.called("reserve") if c.error is None]
        return {r.token: r for r in made if id(r) not in closed}

    @property
    def spent_usd(self) -> dict[str, float]:
        """Settled cost per workspace."""
        out: dict[str, float] = {}
        for c in self.called("settle"):
            out[c.args[0].workspace] = out.get(c.args[0].workspace, 0.0) + c.args[1]
        return out


def cache_key(request: Request, policy: str) -> str:
    return policy + request.model_dump_json(include={"messages", "max_tokens"})


@dataclass
class Rig:
    """An engine over a hand-built plan plus handles on every double it was given."""

    engine: Engine
    adapter: ScriptedAdapter
    clock: FakeClock
    limiter: Limiter
    budget: Budget
    cache: LRUCache
    ledger: CapturingLedger


def rig(plan: Plan, adapter: ScriptedAdapter | None = None, seed: int = 0) -> Rig:
    adapter = adapter or ScriptedAdapter()
    clock = FakeClock()
    limiter, budget, ledger = Limiter(), Budget(clock), CapturingLedger()
    cache = LRUCache(1000, clock)
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

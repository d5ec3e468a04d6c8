"""One attempt: call the adapter once and close the try it was admitted for.

A try that answers is settled (rate limit, breakers, latency, budget), one that fails is
recorded and gives back what it held, one that was cancelled is released without counting as
a failure; each outcome lands in the attempts list, the stats and the ledger. Admission
(guards.py) and the failover loop (executor.py) live elsewhere so this file is only about a
single call; it is a mixin of `Execution`, so the hot path pays no extra call per try.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.errors import AttemptRecord, AuthenticationError, ProviderError, RateLimitedError
from engine.frozen import builder
from engine.messages import Chunk, ProviderResponse, RateLimitInfo, Request, Usage
from engine.runtime.guards import Admission
from engine.runtime.services import OpenStream
from engine.runtime.state import LedgerRow
from engine.runtime.templates import apply_template

if TYPE_CHECKING:
    from engine.endpoints import Endpoint
    from engine.plan.values import RoutePlan
    from engine.providers.base import Adapter
    from engine.runtime.services import Candidate, Guard

#: Error kinds that say something about an upstream's health (they feed the breakers).
BREAKER_KINDS = frozenset({"unavailable", "timeout", "protocol_error"})
#: How long a key rejected with 401 is left out before it is tried again.
BAD_KEY_COOLDOWN_S = 300.0

# Every try records one of each: built without a frozen dataclass's per-field cost.
_attempt_record = builder(AttemptRecord)
_ledger_row = builder(LedgerRow)


class Attempt(Admission):
    """The one-try half of `Execution`: the adapter call and how the try is closed."""

    # The fields this half assigns live here, so mypy sees them in a __slots__.
    __slots__ = ("_rendered", "calls_in_leg")

    # Set by Execution.__init__ (declared here for the type checker only).
    request_id: str
    calls_in_leg: int
    _rendered: dict[int, Request] | None

    def rendered(self, route: RoutePlan) -> Request:
        """The request with this route's template applied (rendered once per route)."""
        if route.template is None:
            return self.request
        key = id(route)
        rendered = self._rendered
        if rendered is None:
            rendered = self._rendered = {}
        req = rendered.get(key)
        if req is None:
            req = rendered[key] = apply_template(route.template, self.request)
        return req

    async def _once(
        self, cand: Candidate, retry: int, index: int, streaming: bool
    ) -> tuple[Guard, ProviderResponse | OpenStream]:
        # What can fail on the caller's side (template, protocol) fails before any guard
        # is taken, so nothing is left reserved.
        route = cand.route
        request = self.request if route.template is None else self.rendered(route)
        adapter = self.svc.adapter_for(cand.provider.protocol)
        guard = self._quick_guard(cand, retry, index) or await self._guard(cand, retry, index)
        self.calls_in_leg += 1
        endpoint = self._endpoint(cand, guard.lease.key)
        mid = cand.model.id
        self.svc.strategies.begin(mid)
        try:
            if streaming:
                opened = await self._open(adapter, request, endpoint, guard)
                return guard, opened
            resp = await adapter.complete(request, endpoint)
        except ProviderError as exc:
            self.svc.strategies.end(mid)
            await self.fail(guard, exc)
            raise
        except BaseException:
            self.svc.strategies.end(mid)
            self.abort(guard)
            raise
        self.svc.strategies.end(mid)
        return guard, resp

    async def _open(
        self, adapter: Adapter, request: Request, endpoint: Endpoint, guard: Guard
    ) -> OpenStream:
        chunks = adapter.stream(request, endpoint)
        try:
            first: Chunk | None = await anext(chunks)
        except StopAsyncIteration:
            first = None
        guard.ttft_ms = (self.svc.clock.monotonic() - guard.started) * 1000
        return OpenStream(guard, first, chunks)

    # -- closing a try --------------------------------------------------------------------

    async def succeed(
        self, guard: Guard, usage: Usage, rate_limit: RateLimitInfo | None
    ) -> float | None:
        """Settle everything for a successful try; returns its cost (None when unknown)."""
        cost = self.settle_success(guard, usage, rate_limit)
        if guard.reservation is not None:
            await self.settle_budget(guard, cost)
        return cost

    async def settle_budget(self, guard: Guard, cost: float | None) -> None:
        """The budget's part of `succeed`: the reservation becomes the real cost."""
        r = guard.reservation
        assert r is not None
        await self.svc.budget.settle(r, r.amount_usd if cost is None else cost)

    def settle_success(
        self, guard: Guard, usage: Usage, rate_limit: RateLimitInfo | None
    ) -> float | None:
        """`succeed` but for the budget (which must be awaited): the rate limit, breakers,
        latency and records. Returns the try's cost (None when unknown)."""
        cand, svc = guard.cand, self.svc
        latency = (svc.clock.monotonic() - guard.started) * 1000
        cost = cand.model.cost(usage.input_tokens, usage.output_tokens)
        svc.limiter.settle(guard.lease, usage.input_tokens, usage.output_tokens)
        if rate_limit is not None:
            svc.limiter.observe(cand.provider.id, guard.lease.key.id, rate_limit)
        if not svc.breakers.all_closed:
            svc.breakers.success(cand.provider.id)
            svc.breakers.success(cand.model.id)
        svc.strategies.observe_latency(cand.model.id, latency, guard.ttft_ms)
        self._record(guard, "ok", None, None, latency, usage, cost)
        return cost

    async def fail(self, guard: Guard, exc: ProviderError) -> None:
        """Record a failed try and give back what it held."""
        cand, svc = guard.cand, self.svc
        latency = (svc.clock.monotonic() - guard.started) * 1000
        svc.limiter.settle(guard.lease, guard.lease.input_tokens, 0)
        if exc.kind in BREAKER_KINDS:
            plan = cand.route.breaker
            svc.breakers.failure(cand.provider.id, plan, exc.kind)
            svc.breakers.failure(cand.model.id, plan, exc.kind)
        else:
            self._abandon(cand)
        if isinstance(exc, RateLimitedError) and exc.retry_after:
            # Every request holding this key should pause, not only the one that was told.
            info = RateLimitInfo(retry_after_s=exc.retry_after)
            svc.limiter.observe(cand.provider.id, guard.lease.key.id, info)
        if isinstance(exc, AuthenticationError) and cand.provider.keys:
            svc.bad_keys[guard.lease.key.id] = svc.clock.monotonic() + BAD_KEY_COOLDOWN_S
        self._record(guard, exc.kind, str(exc), exc.status, latency, None, None)
        if guard.reservation is not None:
            await svc.budget.release(guard.reservation)

    def abort(self, guard: Guard) -> None:
        """A try ended without a verdict (cancelled): release, never count it as a failure."""
        svc, cand = self.svc, guard.cand
        svc.release_lease(guard.lease)
        self._abandon(cand)
        if guard.reservation is not None:
            # A task of its own, so a cancelled caller still gives its reservation back.
            svc.spawn(svc.budget.release(guard.reservation))
        # The ledger still hears of it: the upstream may have started (and billed) the work.
        latency = (svc.clock.monotonic() - guard.started) * 1000
        svc.ledger.record(
            LedgerRow(
                svc.clock.time(),
                self.workspace,
                cand.policy,
                cand.provider.id,
                cand.model.id,
                0,
                0,
                None,
                latency,
                "cancelled",
                guard.fallback_index,
                self.request_id,
            )
        )

    def _record(
        self,
        guard: Guard,
        outcome: str,
        error: str | None,
        status: int | None,
        latency: float,
        usage: Usage | None,
        cost: float | None,
    ) -> None:
        cand, svc = guard.cand, self.svc
        tin = usage.input_tokens if usage else 0
        tout = usage.output_tokens if usage else 0
        pid, mid = cand.provider.id, cand.model.id
        self.attempts.append(
            _attempt_record(
                pid,
                mid,
                outcome,
                error,
                latency,
                guard.retry,
                guard.fallback_index,
                guard.lease.key.id,
                status,
            )
        )
        svc.stats.attempt(pid, mid, outcome == "ok", latency, cost, tin, tout)
        svc.ledger.record(
            _ledger_row(
                svc.clock.time(),
                self.workspace,
                cand.policy,
                pid,
                mid,
                tin,
                tout,
                cost,
                latency,
                outcome,
                guard.fallback_index,
                self.request_id,
                False,
            )
        )

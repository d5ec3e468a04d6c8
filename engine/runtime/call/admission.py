"""Admission: whether one try may go out, and what it holds while it does.

    breakers (provider, then model)  open -> recorded "circuit_open", no network call
    a good key of the provider       none left -> recorded "skipped"
    a rate-limit lease on that key   refused -> recorded "rate_limited" (local limit)
    a budget reservation             refused -> recorded "budget_exceeded"
      (the workspace's caps and the route's, whatever policy, pin, bare name or
      fallback led to the candidate: engine.plan.wallets; then the calling client
      key's: runtime/clients.py)

Whatever is refused raises `Skip` (the failover loop moves on) after giving back what was
taken before the refusal. A try that is admitted is given an `Admitted` (its lease and
its reservations; `quick`: a lease alone), which the attempt keeps and closes later
(attempt.py), never here. The adapter's `Endpoint`
for a model and key is built here too, once per plan and key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from engine.endpoints import Endpoint
from engine.errors import AttemptRecord, BudgetExceededError, RateLimitedError
from engine.frozen import builder
from engine.plan.values import KeyPlan
from engine.runtime.call.data import CallData, Trail
from engine.runtime.call.walk import Candidate
from engine.runtime.services import Services
from engine.state.protocols import Lease, Reservation

#: Endpoints kept per engine before the cache starts over (plans come and go on reload).
ENDPOINT_CACHE_MAX = 4096


class Skip(Exception):
    """A candidate was passed over without a network call (the reason is in the trail)."""


@dataclass(frozen=True, slots=True)
class Admitted:
    """What an admitted try holds until it is closed (slots: read on every step of it)."""

    lease: Lease
    reservation: Reservation | None
    started: float  # monotonic seconds when admission ended
    key_hold: Reservation | None = None  # the same worst case, held on the client key


# One per try, built by name without a keyword dict (engine/frozen.py).
admitted = builder(Admitted)


class Admission:
    """The gate every try of one call passes: breakers, a lease, a reservation."""

    __slots__ = ("call", "svc", "trail")

    def __init__(self, svc: Services, call: CallData, trail: Trail) -> None:
        self.svc, self.call, self.trail = svc, call, trail

    async def admit(self, cand: Candidate, index: int) -> Admitted:
        """Breakers, then a lease and a reservation; or `Skip`, nothing held.

        The lease and the reservation are independent, so they are asked for together: the
        reservation is started first (`BudgetStore.reserve`: a shared store sends its
        request at once), then the lease, so Redis answers both in one round trip."""
        self._breakers(cand, index)
        try:
            terms = self._hold_terms(cand)
            reserving = None if terms is None else self.svc.budget.reserve(*terms)
        except BudgetExceededError as exc:
            raise self._over_budget(cand, index, exc) from None
        try:
            lease = await self._lease(cand, index)
        except BaseException:
            if reserving is not None:
                await self._drop(reserving)
            raise
        try:
            reservation = None if reserving is None else await reserving
        except BudgetExceededError as exc:
            await self.svc.limiter.release(lease)
            raise self._over_budget(cand, index, exc) from None
        except BaseException:
            await self.svc.limiter.release(lease)
            self.abandon(cand)
            raise
        key_hold = None
        if self.call.client_budget is not None:
            key_hold = await self._hold_key(cand, index, lease, reservation)
        now = self.svc.clock.monotonic()
        return admitted(lease=lease, reservation=reservation, started=now, key_hold=key_hold)

    async def _hold_key(
        self, cand: Candidate, index: int, lease: Lease, reservation: Reservation | None
    ) -> Reservation | None:
        """The same worst case held on the calling client key (runtime/clients.py), after
        the workspace's; a refusal gives back the lease and the workspace's hold."""
        try:
            return await self._reserve_key(cand)
        except BudgetExceededError as exc:
            await self._give_back(lease, reservation)
            raise self._over_budget(cand, index, exc) from None
        except BaseException:
            await self._give_back(lease, reservation)
            self.abandon(cand)
            raise

    async def _give_back(self, lease: Lease, reservation: Reservation | None) -> None:
        """What a refused try took before the refusal: its lease, its workspace hold."""
        await self.svc.limiter.release(lease)
        if reservation is not None:
            await self.svc.budget.release(reservation)

    def _over_budget(self, cand: Candidate, index: int, exc: BudgetExceededError) -> Skip:
        """The candidate passed over: its worst case does not fit the budget."""
        self.abandon(cand)
        self.trail.skip(cand.provider.id, cand.model.id, "budget_exceeded", str(exc), index)
        return Skip(cand.model.id)

    async def _drop(self, reserving: Awaitable[Reservation]) -> None:
        """The reservation asked for beside a lease that was refused, given back."""
        pending = asyncio.ensure_future(reserving)
        try:
            reservation = await asyncio.shield(pending)
        except asyncio.CancelledError:  # this call is cancelled; the hold may still land
            pending.add_done_callback(self._release_landed)
            raise
        except Exception:  # refused or failed: nothing is held
            return
        await self.svc.budget.release(reservation)

    def _release_landed(self, reserving: asyncio.Future[Reservation]) -> None:
        if not reserving.cancelled() and reserving.exception() is None:
            self.svc.spawn(self.svc.budget.release(reserving.result()))

    def quick(self, cand: Candidate) -> Lease | None:
        """`admit` for the common case that needs no await: every breaker closed, no budget
        to reserve, a key with room now. None (nothing taken, nothing recorded) whenever
        `admit` must decide. Saves a try two coroutines (measured > 1 us a call)."""
        svc, call = self.svc, self.call
        if not svc.breakers.all_closed or _capped(cand, call) or call.client_budget is not None:
            return None
        keys = svc.good_keys(cand.provider)
        if not keys:
            return None
        features = call.features
        tout = (features.output_tokens or cand.route.default_max_tokens) * call.choices
        return svc.limiter.try_acquire_nowait(cand.provider.id, keys, features.input_tokens, tout)

    def _breakers(self, cand: Candidate, index: int) -> None:
        """The breakers' verdict; an open one is recorded and costs no network call."""
        b = self.svc.breakers
        if b.all_closed:
            return
        pid, mid = cand.provider.id, cand.model.id
        if not b.allow(pid):
            refused = pid
        elif not b.allow(mid):
            b.abandon(pid)
            refused = mid
        else:
            return
        self.trail.attempts.append(
            AttemptRecord(
                provider=pid,
                model=mid,
                outcome="circuit_open",
                error=f"breaker open: {refused}",
                fallback_index=index,
            )
        )
        raise Skip(refused)

    async def _lease(self, cand: Candidate, index: int) -> Lease:
        """A lease on one of the provider's good keys, waiting as the route allows."""
        pid = cand.provider.id
        keys = self.svc.good_keys(cand.provider)
        if not keys:
            self.abandon(cand)
            self.trail.skip(
                pid,
                cand.model.id,
                "skipped",
                "every key of the provider was rejected",
                index,
            )
            raise Skip(pid)
        rl = cand.route.rate_limit
        wait_s = 0.0 if rl.on_limited == "skip" else rl.max_wait_ms / 1000
        try:
            return await self.svc.limiter.acquire(pid, keys, *self._estimate(cand), wait_s)
        except RateLimitedError as exc:
            self.abandon(cand)
            self.trail.skip(pid, cand.model.id, "rate_limited", f"local rate limit: {exc}", index)
            raise Skip(pid) from None

    def _hold_terms(self, cand: Candidate) -> tuple[str, float, float | None, float | None] | None:
        """What to reserve (bucket, worst case, daily and monthly caps): the worst case
        against the workspace's daily/monthly budget (its own caps and the route's,
        engine.plan.wallets), whatever way the call reached the candidate. A price that is
        not known cannot be shown to fit under a cap, so it is refused (BudgetExceededError);
        with no cap at all nothing is reserved (None)."""
        call = self.call
        b = cand.route.budget
        daily, monthly = call.wallet.caps(b.daily_usd, b.monthly_usd)
        if daily is None and monthly is None:
            return None
        worst = cand.scored.worst_cost_usd
        if worst == 0:  # a free model (mock, local): nothing to hold, nothing to settle
            return None
        if worst is None:
            raise BudgetExceededError(
                f"the price of {cand.model.id} is not known, so the workspace "
                "budget cannot hold its cost (set input_price and output_price)"
            )
        worst += self._more_choices(cand)
        bucket = call.wallet.bucket or self.svc.names.bucket(call.workspace)
        return bucket, worst, daily, monthly

    def _more_choices(self, cand: Candidate) -> float:
        """What n > 1 choices add to the worst case: n times the largest output, one prompt."""
        n = self.call.choices
        if n == 1:
            return 0.0
        model = cand.model
        out = self.call.features.output_tokens or model.max_output
        return model.cost(0, (n - 1) * out) or 0.0

    async def _reserve_key(self, cand: Candidate) -> Reservation | None:
        """The same worst case held on the calling client key, when it has a budget and
        the price is known (runtime/clients.py)."""
        budget, client = self.call.client_budget, self.call.client
        if budget is None or client is None:
            return None
        worst = cand.scored.worst_cost_usd
        if worst is None:  # as for workspaces: an unknown price cannot be held under a cap
            raise BudgetExceededError(
                f"the price of {cand.model.id} is not known, so API key {client!r}'s "
                "budget cannot hold its cost (set input_price and output_price)"
            )
        return await self.svc.clients.reserve(client, budget, worst + self._more_choices(cand))

    def _estimate(self, cand: Candidate) -> tuple[int, int]:
        """Input and output tokens the lease books before the real usage is known (the
        output of every choice, for n > 1)."""
        features = self.call.features
        out = features.output_tokens or cand.route.default_max_tokens
        return features.input_tokens, out * self.call.choices

    def abandon(self, cand: Candidate) -> None:
        """A half-open breaker's probe slot given back: this try will not report."""
        self.svc.breakers.abandon(cand.provider.id)
        self.svc.breakers.abandon(cand.model.id)

    def endpoint(self, cand: Candidate, key: KeyPlan) -> Endpoint:
        """The adapter's view of one model with one key; built once per plan and key."""
        cache = self.svc.endpoints
        timeouts = cand.route.timeouts
        ident = (id(cand.provider), id(cand.model), id(key), id(timeouts))
        entry = cache.get(ident)
        if entry is None:
            if len(cache) > ENDPOINT_CACHE_MAX:
                cache.clear()
            # the entry keeps the parts alive, so their ids cannot be reused while cached
            parts: tuple[Any, ...] = (cand.provider, cand.model, key, timeouts)
            entry = cache[ident] = (parts, _endpoint(cand, key))
        return entry[1]


def _capped(cand: Candidate, call: CallData) -> bool:
    """Does this try reserve (a daily or monthly cap from its route or its workspace, and
    a model that is not free)?"""
    b, w = cand.route.budget, call.wallet
    return (
        b.daily_usd is not None
        or b.monthly_usd is not None
        or w.daily_usd is not None
        or w.monthly_usd is not None
    ) and cand.scored.worst_cost_usd != 0


def _endpoint(cand: Candidate, key: KeyPlan) -> Endpoint:
    p = cand.provider
    return Endpoint(
        provider=p.id,
        protocol=p.protocol,
        base_url=p.base_url,
        upstream_model=cand.model.upstream,
        api_key=key.secret,
        key_id=key.id,
        timeouts=cand.route.timeouts or p.timeouts,
        options=p.options if cand.model.options is None else cand.model.options,
        pool_size=p.pool_size,
    )

"""Admission: whether one try may go out, and what it holds while it does.

A try passes the breakers (no network call when one is open), takes a rate-limit lease on
one of the provider's good keys, then a budget reservation; the adapter's `Endpoint` is
built (and cached) here too. Whatever is refused is recorded as a skipped attempt and
signalled with `Skip`; whatever was taken before a refusal is released (`_abandon`). Kept
apart from the call itself (attempt.py) so each can be read and changed on its own; it is a
mixin of `Execution`, so the hot path pays no extra call per try.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.endpoints import Endpoint
from engine.errors import AttemptRecord, BudgetExceededError, RateLimitedError
from engine.runtime.services import Candidate, Guard, Skip

if TYPE_CHECKING:
    from engine.messages import Request
    from engine.plan.values import Features, KeyPlan
    from engine.runtime.services import Services
    from engine.runtime.state import Reservation


class Admission:
    """The admission half of `Execution` (breakers, lease, reservation, endpoint)."""

    __slots__ = ()

    # Set by Execution.__init__ (declared here for the type checker only).
    svc: Services
    request: Request
    features: Features
    attempts: list[AttemptRecord]
    eliminated: dict[str, str]
    fallback_index: int

    def _skip(self, cand: Candidate, outcome: str, why: str) -> None:
        self.eliminated[cand.model.id] = why
        self.attempts.append(
            AttemptRecord(
                cand.provider.id, cand.model.id, outcome, why, 0.0, 0, self.fallback_index
            )
        )

    def _admit(self, cand: Candidate, index: int) -> None:
        """The breakers' verdict; an open one is recorded and costs no network call."""
        b = self.svc.breakers
        if b.all_closed:
            return
        pid, mid = cand.provider.id, cand.model.id
        if b.allow(pid):
            if b.allow(mid):
                return
            b.abandon(pid)
            key = mid
        else:
            key = pid
        self.attempts.append(
            AttemptRecord(pid, cand.model.id, "circuit_open", f"breaker open: {key}", 0.0, 0, index)
        )
        raise Skip(key)

    def _quick_guard(self, cand: Candidate, retry: int, index: int) -> Guard | None:
        """`_guard` for the common case that needs no await: every breaker closed, no budget
        to reserve, a key with room right now. None, with nothing taken and nothing
        recorded, in any other case (then `_guard` decides). Saves each such try two
        coroutines (this and the limiter's acquire)."""
        svc = self.svc
        try_acquire = svc.try_acquire
        if try_acquire is None or not svc.breakers.all_closed:
            return None
        route = cand.route
        b = route.budget
        if b.daily_usd is not None or b.monthly_usd is not None:
            return None
        provider = cand.provider
        keys = provider.keys  # svc.good_keys(provider)'s commonest answer, without the call
        if not keys or svc.bad_keys:
            keys = svc.good_keys(provider)
            if not keys:
                return None
        features = self.features
        tout = features.output_tokens or route.default_max_tokens
        lease = try_acquire(provider.id, keys, features.input_tokens, tout)
        if lease is None:
            return None
        return Guard(cand, lease, None, svc.clock.monotonic(), retry, index)

    async def _guard(self, cand: Candidate, retry: int, index: int) -> Guard:
        """Breaker, then a rate-limit lease, then a budget reservation, in that order."""
        if not self.svc.breakers.all_closed:  # _admit's own first check, without its call
            self._admit(cand, index)
        keys = self.svc.good_keys(cand.provider)
        if not keys:
            self._abandon(cand)
            self._skip(cand, "skipped", "every key of the provider was rejected")
            raise Skip(cand.provider.id)
        tin = self.features.input_tokens
        tout = self.features.output_tokens or cand.route.default_max_tokens
        rl = cand.route.rate_limit
        wait_s = 0.0 if rl.on_limited == "skip" else rl.max_wait_ms / 1000
        try:
            lease = await self.svc.limiter.acquire(cand.provider.id, keys, tin, tout, wait_s)
        except RateLimitedError as exc:
            self._abandon(cand)
            self._skip(cand, "rate_limited", f"local rate limit: {exc}")
            raise Skip(cand.provider.id) from None
        try:
            b = cand.route.budget
            reservation = None
            if b.daily_usd is not None or b.monthly_usd is not None:
                reservation = await self._reserve(cand)
        except BudgetExceededError as exc:
            self.svc.release_lease(lease)
            self._abandon(cand)
            self._skip(cand, "budget_exceeded", str(exc))
            raise Skip(cand.model.id) from None
        except BaseException:
            self.svc.release_lease(lease)
            self._abandon(cand)
            raise
        return Guard(cand, lease, reservation, self.svc.clock.monotonic(), retry, index)

    async def _reserve(self, cand: Candidate) -> Reservation | None:
        b = cand.route.budget
        worst = cand.scored.worst_cost_usd
        if (b.daily_usd is None and b.monthly_usd is None) or worst is None:
            return None
        return await self.svc.budget.reserve(self.workspace, worst, b.daily_usd, b.monthly_usd)

    @property
    def workspace(self) -> str:
        return self.features.workspace or str(self.request.metadata.get("workspace", "default"))

    def _abandon(self, cand: Candidate) -> None:
        self.svc.breakers.abandon(cand.provider.id)
        self.svc.breakers.abandon(cand.model.id)

    def _endpoint(self, cand: Candidate, key: KeyPlan) -> Endpoint:
        """The adapter's view of one model with one key; built once per plan and key."""
        cache = self.svc.endpoints
        timeouts = cand.route.timeouts
        ident = (id(cand.provider), id(cand.model), id(key), id(timeouts))
        entry = cache.get(ident)
        if entry is None:
            if len(cache) > 4096:  # plans come and go on reload; never grow without bound
                cache.clear()
            # the entry keeps the parts alive, so their ids cannot be reused while cached
            parts = (cand.provider, cand.model, key, timeouts)
            entry = cache[ident] = (parts, self._new_endpoint(cand, key))
        return entry[1]

    def _new_endpoint(self, cand: Candidate, key: KeyPlan) -> Endpoint:
        p = cand.provider
        return Endpoint(
            provider=p.id,
            protocol=p.protocol,
            base_url=p.base_url,
            upstream_model=cand.model.upstream,
            api_key=key.secret,
            key_id=key.id,
            timeouts=cand.route.timeouts or p.timeouts,
            options=p.options,
            pool_size=p.pool_size,
        )

"""One attempt: a single try at one candidate, as an async context manager.

    async with Attempt(admission, cand, request, retry, index) as attempt:
        resp = await adapter.complete(attempt.request, attempt.endpoint)
        attempt.answered(resp.usage, resp.rate_limit)

Entering admits the try (admission.py: breakers, lease, reservation; `Skip` when refused)
and counts it in flight for the strategies. Leaving closes it, and this is the only place a
try is closed:

    answered, no exception   settled: the lease corrected with the real usage, limits
                             learned, breakers told, latency measured, the budget
                             reservation settled at the real cost
    ProviderError            failed: the lease settled with its input estimate, breakers
                             told (health errors; not a pool-wait timeout, which is
                             local congestion), a 429's pause shared with every request
                             on the key, a rejected key cooled down or replaced by its
                             rotated value (runtime/keys.py), the reservation released
    anything else            aborted (cancelled, caller stopped a stream): everything given
                             back, nothing counted as a failure

Each outcome is one AttemptRecord in the trail, one stats sample and one ledger row.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any

from engine.errors import AttemptRecord, AuthenticationError, ProviderError, RateLimitedError
from engine.frozen import builder
from engine.messages import RateLimitInfo, Request, Usage
from engine.pricing import CostBreakdown, breakdown
from engine.runtime.call.admission import Admission
from engine.runtime.call.walk import Candidate
from engine.state.protocols import LedgerRow

#: Error kinds that say something about an upstream's health (they feed the breakers).
BREAKER_KINDS = frozenset({"unavailable", "timeout", "protocol_error"})

# Every try records one of each; builder() skips a frozen dataclass's per-field
# object.__setattr__, which measured >1 us a call for these two (engine/frozen.py).
_attempt_record = builder(AttemptRecord)
_ledger_row = builder(LedgerRow)
_NO_USAGE = Usage()  # what a try that got no answer used, as far as the ledger knows


class Attempt:
    """One try: admitted on entry, settled / failed / aborted on exit, exactly once."""

    __slots__ = (
        "_rate_limit",
        "_usage",
        "admission",
        "cand",
        "cost",
        "cost_detail",
        "endpoint",
        "handle",
        "index",
        "key_hold",
        "lease",
        "partial",
        "request",
        "reservation",
        "retry",
        "started",
        "ttft_ms",
    )

    def __init__(
        self, admission: Admission, cand: Candidate, request: Request, retry: int, index: int
    ) -> None:
        self.admission = admission
        self.cand = cand
        self.request = request  # the route's template applied
        self.retry = retry  # 0 for the first try at this candidate
        self.index = index  # the candidate's fallback index
        self.ttft_ms: float | None = None
        self.cost: float | None = None  # set when settled; None also when the price is unknown
        self.cost_detail: CostBreakdown | None = None  # the same cost per kind of token
        self._usage: Usage | None = None
        self._rate_limit: RateLimitInfo | None = None
        #: Set once a stream has started: the usage so far (estimated input plus the
        #: output streamed), what a stream cut or abandoned midway is billed at.
        self.partial: Callable[[], Usage] | None = None
        self.handle: object = None  # the observer's, when one is installed (runtime/observe.py)

    async def __aenter__(self) -> Attempt:
        admission, cand = self.admission, self.cand
        # What admission took is kept on the attempt itself: the common case (no await,
        # see Admission.quick) takes a lease and nothing else, so no Admitted is built.
        lease = admission.quick(cand)
        if lease is None:
            held = await admission.admit(cand, self.index)
            lease, self.reservation, self.key_hold = held.lease, held.reservation, held.key_hold
            self.started = held.started
        else:
            self.reservation = self.key_hold = None
            self.started = admission.svc.clock.monotonic()
        self.lease = lease
        self.endpoint = admission.endpoint(cand, lease.key)
        if admission.svc.keys.cooling:  # a key whose cooldown is over: this try probes it
            admission.svc.keys.claim(lease.key.id, self)
        admission.svc.strategies.begin(cand.model.id)
        observer = admission.svc.observer
        if observer is not None:
            self.handle = observer.started(cand, self.endpoint, self.retry)
        return self

    def first_token(self) -> None:
        """The first chunk of a stream arrived: its time to first token is measured now."""
        self.ttft_ms = (self.admission.svc.clock.monotonic() - self.started) * 1000

    def answered(self, usage: Usage, rate_limit: RateLimitInfo | None) -> None:
        """The upstream answered in full with this usage; leaving the block settles it."""
        self._usage, self._rate_limit = usage, rate_limit

    def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Coroutine[Any, Any, None]:
        """Closes the try: returns the one closing coroutine that `async with` awaits."""
        self.admission.svc.strategies.end(self.cand.model.id)
        if exc is None and self._usage is not None:
            return self._settle(self._usage)
        if isinstance(exc, ProviderError):
            return self._fail(exc)
        return self._abort()

    # -- the three ways a try closes ------------------------------------------------------

    async def _settle(self, usage: Usage) -> None:
        svc, cand, lease = self.admission.svc, self.cand, self.lease
        pid, mid = cand.provider.id, cand.model.id
        latency = (svc.clock.monotonic() - self.started) * 1000
        self.cost = cost = self._price(usage)
        await svc.limiter.settle(lease, usage.input_tokens, usage.output_tokens)
        if self._rate_limit is not None:
            await svc.limiter.observe(pid, lease.key.id, self._rate_limit)
            svc.announce(pid, lease.key.id, self._rate_limit)
        if not svc.breakers.all_closed:
            svc.breakers.success(pid)
            svc.breakers.success(mid)
        svc.strategies.observe_latency(mid, latency, self.ttft_ms)
        if svc.keys.cooling:
            svc.keys.answered(lease.key.id)
        self._record("ok", None, None, latency, usage, cost)
        if self.reservation is not None or self.key_hold is not None:
            await self._close_holds(cost, settle=True)

    async def _fail(self, exc: ProviderError) -> None:
        svc, cand, lease = self.admission.svc, self.cand, self.lease
        latency = (svc.clock.monotonic() - self.started) * 1000
        await svc.limiter.settle(lease, lease.input_tokens, 0)
        if exc.kind in BREAKER_KINDS and exc.phase != "pool":  # a pool wait: congestion here
            plan = cand.route.breaker
            svc.breakers.failure(cand.provider.id, plan, exc.kind)
            svc.breakers.failure(cand.model.id, plan, exc.kind)
        else:
            self.admission.abandon(cand)
        if isinstance(exc, RateLimitedError) and exc.retry_after:
            # Every request holding this key should pause, not only the one that was told.
            info = RateLimitInfo(retry_after_s=exc.retry_after)
            await svc.limiter.observe(cand.provider.id, lease.key.id, info)
        key = lease.key
        if isinstance(exc, AuthenticationError) and cand.provider.keys:
            if svc.keys.rejected(key, svc.clock.monotonic(), self):
                svc.forget_key(key.id)
        elif svc.keys.cooling:
            svc.keys.released(key.id, self)
        if self.partial is not None:  # cut mid-stream: the provider bills what it sent
            usage = self.partial()
            cost = self._price(usage)
            self._record(exc.kind, str(exc), exc.status, latency, usage, cost)
            await self._close_holds(cost, settle=True)
            return
        # A request that never left this machine cost nothing (0, not "unknown").
        self._record(exc.kind, str(exc), exc.status, latency, None, None if exc.reached else 0.0)
        await self._close_holds(None, settle=False)

    async def _abort(self) -> None:
        svc, lease = self.admission.svc, self.lease
        await svc.limiter.release(lease)
        self.admission.abandon(self.cand)
        if svc.keys.cooling:
            svc.keys.released(lease.key.id, self)
        latency = (svc.clock.monotonic() - self.started) * 1000
        if self.partial is not None:
            # A stream the caller abandoned: the provider bills the prompt and what it
            # streamed, so the budget keeps that (a task of its own: the caller is gone).
            usage = self.partial()
            cost = self._price(usage)
            if self.reservation is not None or self.key_hold is not None:
                svc.spawn(self._close_holds(cost, settle=True))
            self._ledger("cancelled", latency, usage, cost)
            return
        if self.reservation is not None or self.key_hold is not None:
            # A task of its own, so a cancelled caller still gives its reservation back.
            svc.spawn(self._close_holds(None, settle=False))
        # The ledger still hears of it: the upstream may have started (and billed) the work.
        self._ledger("cancelled", latency, None, None)

    async def _close_holds(self, cost: float | None, *, settle: bool) -> None:
        """Settle the workspace's and the client key's holds at `cost` (at the hold itself
        when the cost is unknown), or release both (`settle=False`)."""
        svc = self.admission.svc
        for store, r in ((svc.budget, self.reservation), (svc.clients.store, self.key_hold)):
            if r is None:
                continue
            if settle:
                await store.settle(r, r.amount_usd if cost is None else cost)
            else:
                await store.release(r)

    # -- records --------------------------------------------------------------------------

    def _price(self, usage: Usage) -> float | None:
        """The try's cost at the prices in force now, on every kind of token it used."""
        prices = self.cand.model.prices
        if prices is None:
            return None
        detail = self.cost_detail = breakdown(
            prices.rates_at(self.admission.svc.clock.time()),
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_read_tokens,
            usage.cache_write_tokens,
        )
        return detail.total_usd

    def _record(
        self,
        outcome: str,
        error: str | None,
        status: int | None,
        latency: float,
        usage: Usage | None,
        cost: float | None,
    ) -> None:
        """The try's AttemptRecord, stats sample and ledger row."""
        cand, svc = self.cand, self.admission.svc
        pid, mid = cand.provider.id, cand.model.id
        self.admission.trail.attempts.append(
            _attempt_record(
                provider=pid,
                model=mid,
                outcome=outcome,
                error=error,
                latency_ms=latency,
                retry=self.retry,
                fallback_index=self.index,
                key_id=self.lease.key.id,
                status=status,
            )
        )
        tin = usage.input_tokens if usage else 0
        tout = usage.output_tokens if usage else 0
        svc.stats.attempt(pid, mid, outcome == "ok", latency, cost, tin, tout)
        self._ledger(outcome, latency, usage, cost)

    def _ledger(
        self, outcome: str, latency: float, usage: Usage | None, cost: float | None
    ) -> None:
        svc, cand, call = self.admission.svc, self.cand, self.admission.call
        u = usage or _NO_USAGE
        # The time and the workspace by position (a float and a str: mypy tells them
        # apart): with more than 15 keywords Python packs them into a dict for the call,
        # which measured ~9k instructions a try. `cached` keeps its default (False).
        row = _ledger_row(
            svc.clock.time(),
            call.workspace,
            policy=cand.policy,
            provider=cand.provider.id,
            model=cand.model.id,
            input_tokens=u.input_tokens,
            output_tokens=u.output_tokens,
            cost_usd=cost,
            latency_ms=latency,
            outcome=outcome,
            fallback_index=self.index,
            request_id=call.request_id,
            cache_read_tokens=u.cache_read_tokens,
            cache_write_tokens=u.cache_write_tokens,
            reasoning_tokens=u.reasoning_tokens,
            client=call.client,
        )
        svc.ledger.record(row)
        if svc.observer is not None:
            svc.observer.ended(self.handle, row)

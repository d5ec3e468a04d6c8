"""The attempt loop: one request from selection to answer, across candidates and retries.

    target (policy | provider/name pin) + request.fallbacks
      -> candidates: select() ranking, ordered by the live strategy, then the route's
         chain, then its fallback_policy, then each request fallback, deduplicated
      -> eligibility: provider enabled, keys left, context window, per-request budget
      -> per candidate, tenacity AsyncRetrying (injected sleep, backoff with jitter,
         Retry-After up to the cap), each try guarded by:
            breaker (no network call when open) -> rate-limit lease -> budget reservation
            -> one adapter call -> settle / release, ledger row, stats, strategy update
      -> next candidate on failure, until one answers or max_attempts is spent

Streams come back from here with their first chunk already received (so failures before
the first token fail over like any other); relaying the rest is streaming.py's job.

Auth errors retire the key (others of the provider are still tried); permission errors skip
the provider; context-window errors skip candidates whose window is not larger; a plain
invalid request fails at once. When everything fails, AllCandidatesFailedError lists every
attempt. Whatever ends an attempt (success, error, cancellation) settles or releases its
reservations in a `finally`.

This module is the `Execution` class and its failover loop. A try's admission (breakers,
lease, reservation, endpoint) is guards.py and the try itself (adapter call, settle / fail /
abort, records) is attempt.py; both are mixins of `Execution`, so splitting the files costs
the hot path no extra call. The value types they share are in services.py.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Generator
from dataclasses import replace
from typing import NamedTuple

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from engine.errors import (
    AllCandidatesFailedError,
    AttemptRecord,
    AuthenticationError,
    BudgetExceededError,
    ContextWindowExceededError,
    EngineError,
    InvalidRequestError,
    NoCandidateError,
    PermissionDeniedError,
    ProviderError,
    UnknownModelError,
    UnknownPolicyError,
)
from engine.frozen import builder
from engine.messages import (
    ProviderResponse,
    Request,
)
from engine.plan.values import (
    DYNAMIC_STRATEGIES,
    ModelPlan,
    Plan,
    ProviderPlan,
    RetryPlan,
    RoutePlan,
    Scored,
    Selection,
    StrategyPlan,
)
from engine.result import Response
from engine.runtime.attempt import Attempt
from engine.runtime.services import (
    Candidate,
    Guard,
    OpenStream,
    Services,
    Skip,
    candidate,
)
from engine.runtime.state import (
    LedgerRow,
)

#: The route pins and unknown policies run under: every default of the plan types.
PIN_STRATEGY = StrategyPlan(name="ordered")
PIN_ROUTE = RoutePlan(policy="", candidates=(), strategy=PIN_STRATEGY)

#: Response(...) without a frozen dataclass's per-field cost (one per call; engine.frozen).
_response = builder(Response)

#: What an Execution starts with as its skipped providers (no set made per call).
_NONE: frozenset[str] = frozenset()

#: Request ids: a per-process random prefix and a counter (unique, and cheaper than uuid4).
_ID_PREFIX = os.urandom(4).hex()
_IDS = itertools.count()


class _Leg(NamedTuple):
    """A resolved target: a policy's selection or a pin's synthetic one. A named tuple
    built with tuple.__new__ (one per call; see services.candidate)."""

    target: str
    route: RoutePlan
    selection: Selection | None  # None for a pin
    pin: Scored | None = None


_new_tuple = tuple.__new__


def _one(cand: Candidate) -> Generator[Candidate, None, None]:
    """A pin's single candidate, as a generator like every other leg's (so it can close)."""
    yield cand


def _unknown_model(pin: str, provider: ProviderPlan) -> ModelPlan:
    """A pinned model the registry does not list: callable, with its cost unknown."""
    _, _, name = pin.partition("/")
    return ModelPlan(
        id=pin,
        provider=provider.id,
        upstream=name,
        capabilities=frozenset(),
        context_window=0,
        max_output=0,
        input_price=None,
        output_price=None,
        quality=0.0,
        latency_ms=0.0,
        local=provider.local,
    )


class Execution(Attempt):
    """One engine call: resolves targets lazily, walks candidates, records every attempt."""

    __slots__ = (
        "_budget",
        "_candidates",
        "attempts",
        "eliminated",
        "fallback_index",
        "features",
        "final",
        "leg_max",
        "min_window",
        "plan",
        "primary",
        "request",
        "request_id",
        "skip_providers",
        "started",
        "streaming",
        "svc",
        "tried",
    )

    def __init__(
        self, svc: Services, plan: Plan, request: Request, policy: str | None, streaming: bool
    ) -> None:
        self.svc = svc
        self.plan = plan
        self.request = request
        self.streaming = streaming
        self.features = features = svc.features(request)
        self.request_id = f"{_ID_PREFIX}{next(_IDS):010x}"
        self.started = svc.clock.monotonic()
        self.attempts: list[AttemptRecord] = []
        self.calls_in_leg = 0
        self.leg_max = 0
        self.fallback_index = 0
        self.min_window = 0
        self.skip_providers: frozenset[str] = _NONE  # grown (rarely) by _try_again
        self.tried: set[str] = set()
        self.eliminated: dict[str, str] = {}
        self._rendered: dict[int, Request] | None = None  # made by the first template
        self.final: Response | None = None  # the assembled answer, once a stream has ended
        mine, theirs = features.budget_usd, request.budget_usd  # the smaller cap, if any
        self._budget = mine if theirs is None else theirs if mine is None else min(mine, theirs)
        for target in request.fallbacks:  # a typo must fail now, not be skipped silently
            self._check_target(target)
        self.primary = primary = self._primary(policy or request.model or plan.default_policy)
        if primary is not None and not request.fallbacks:
            # One leg: its candidates are the whole walk (one generator level fewer).
            self._candidates = self._leg_candidates(primary, 0)
        else:
            self._candidates = self._walk()

    # -- targets and candidates -----------------------------------------------------------

    def _primary(self, target: str | None) -> _Leg | None:
        """The first target; with request fallbacks, "no candidate" just moves on to them."""
        try:
            return self._resolve(target)
        except NoCandidateError as exc:
            if not self.request.fallbacks:
                raise
            self.eliminated.update(exc.eliminated)
            return None

    @property
    def route(self) -> RoutePlan:
        return self.primary.route if self.primary is not None else PIN_ROUTE

    def _check_target(self, target: str | None) -> ProviderPlan | None:
        """Is `target` a policy (None returned) or a pin of a known provider (returned)?"""
        if not target:
            raise UnknownPolicyError("no policy given and the configuration names no default")
        if target in self.plan.policies:
            return None
        provider_id, slash, name = target.partition("/")
        if not slash:
            return self.plan.providers[self._bare_model(target).provider]
        provider = self.plan.providers.get(provider_id) if name else None
        if provider is None:
            raise UnknownModelError(f"unknown provider in model pin {target!r}")
        return provider

    def _bare_model(self, name: str) -> ModelPlan:
        """A bare model name ("gpt-4o-mini", as OpenAI clients send it) that names exactly
        one registry model; anything else is an error that says what would work."""
        found = [m for m in self.plan.models.values() if m.id.partition("/")[2] == name]
        if len(found) == 1:
            return found[0]
        if found:
            ids = ", ".join(sorted(m.id for m in found))
            raise UnknownModelError(f"model {name!r} is ambiguous ({ids}); pin provider/name")
        known = ", ".join(sorted(self.plan.policies)) or "none"
        raise UnknownPolicyError(f"unknown policy or model {name!r} (policies: {known})")

    def _resolve(self, target: str | None) -> _Leg:
        """A policy name, a `provider/name` pin or a unique bare model name."""
        provider = self._check_target(target)
        assert target is not None
        if provider is not None and "/" not in target:
            target = self._bare_model(target).id
        if provider is None:
            sel = self.svc.select(self.plan, target, self.features)
            return _new_tuple(_Leg, (target, sel.route, sel, None))
        model = self.plan.models.get(target) or _unknown_model(target, provider)
        route = RoutePlan(policy=target, candidates=(target,), strategy=PIN_STRATEGY)
        return _new_tuple(_Leg, (target, route, None, self._score(model, route)))

    def _score(self, model: ModelPlan, route: RoutePlan, score: float = 0.0) -> Scored:
        tin = self.features.input_tokens
        cap = self.features.output_tokens
        expected = cap or route.default_max_tokens
        worst = cap or model.max_output or expected
        return Scored(model, score, model.cost(tin, expected), model.cost(tin, worst))

    def _walk(self) -> Generator[Candidate, None, None]:
        """Every candidate in try order; later legs are resolved only when reached."""
        if self.primary is not None:
            yield from self._leg_candidates(self.primary, 0)
        for i, target in enumerate(self.request.fallbacks, start=1):
            try:
                leg = self._resolve(target)
            except NoCandidateError as exc:
                self.eliminated[target] = str(exc)
                continue
            yield from self._leg_candidates(leg, i)

    def _leg_candidates(self, leg: _Leg, index: int) -> Generator[Candidate, None, None]:
        """A leg's candidates, its attempt count started. Called when the walk reaches the
        leg; a plain function (not a generator of its own), so every candidate passes
        through one generator level fewer."""
        self.calls_in_leg = 0
        self.leg_max = leg.route.max_attempts
        if leg.pin is not None:
            provider = self.plan.providers[leg.pin.model.provider]
            return _one(candidate(leg.pin, provider, leg.route, None, None, index))
        assert leg.selection is not None
        return self._policy_candidates(leg.selection, index, (leg.target,))

    def _policy_candidates(
        self, sel: Selection, index: int, visited: tuple[str, ...]
    ) -> Generator[Candidate, None, None]:
        """The ranking (in live-strategy order), the checked chain, then fallback_policy."""
        route, providers = sel.route, self.plan.providers
        ordered: tuple[Scored, ...] | list[Scored] = sel.ranked
        if route.strategy.name in DYNAMIC_STRATEGIES:
            key = f"{sel.policy}:{sel.rule}"
            ordered = self.svc.strategies.order(key, route.strategy, sel.ranked, self.streaming)
        for s in (*ordered, *sel.chain) if sel.chain else ordered:
            provider = providers.get(s.model.provider)
            if provider is not None:
                yield candidate(s, provider, route, sel.policy, sel.rule, index)
        nxt = route.fallback_policy
        if nxt and nxt not in visited and nxt in self.plan.policies:
            try:
                fallback = self.svc.select(self.plan, nxt, self.features)
            except NoCandidateError as exc:
                self.eliminated[nxt] = str(exc)
                return
            yield from self._policy_candidates(fallback, index, (*visited, nxt))

    # -- eligibility ----------------------------------------------------------------------

    def _eligible(self, cand: Candidate) -> bool:
        """Static checks that need no network: each failure is recorded with its reason."""
        m, p = cand.model, cand.provider
        if m.id in self.tried:
            return False
        self.tried.add(m.id)
        if not p.enabled:
            self._skip(cand, "disabled", p.disabled_reason or "provider disabled")
        elif p.id in self.skip_providers:
            self._skip(cand, "skipped", "provider refused this request's credentials")
        elif self.min_window and m.context_window <= self.min_window:
            self._skip(cand, "context_window_exceeded", "context window not larger")
        elif self._budget is None and cand.route.budget.max_cost_per_request is None:
            return True  # no cap at all: _within_budget's answer, without the call
        elif not self._within_budget(cand):
            self._skip(cand, "budget_exceeded", "worst-case cost above the request budget")
        else:
            return True
        return False

    def _within_budget(self, cand: Candidate) -> bool:
        """Worst-case cost within the request's budget and the route's per-request cap.

        An unknown price cannot be shown to fit, so with a cap it does not."""
        cap = self._budget
        route_cap = cand.route.budget.max_cost_per_request
        if route_cap is not None:
            cap = route_cap if cap is None else min(cap, route_cap)
        if cap is None:
            return True
        worst = cand.scored.worst_cost_usd
        return worst is not None and worst <= cap

    def exhausted(self) -> bool:
        return self.calls_in_leg >= self.leg_max

    # -- the failover loop ----------------------------------------------------------------

    async def complete(self) -> tuple[Candidate, Guard, ProviderResponse]:
        """Walk candidates until one answers; raise the final error otherwise."""
        cand, guard, resp = await self._first_success(streaming=False)
        assert isinstance(resp, ProviderResponse)
        return cand, guard, resp

    async def open_stream(self) -> tuple[Candidate, OpenStream]:
        """Like `complete`, but the answer is a stream whose first chunk has arrived."""
        cand, _, opened = await self._first_success(streaming=True)
        assert isinstance(opened, OpenStream)
        return cand, opened

    async def _first_success(
        self, streaming: bool
    ) -> tuple[Candidate, Guard, ProviderResponse | OpenStream]:
        """Walk candidates until one answers; raise the final error otherwise.

        All tries at one candidate happen here: the first runs bare (the hot path); only a
        retryable failure goes on to `_retries`, so a healthy call pays nothing for them.
        Written as one coroutine (no per-candidate one) because every call runs it.
        """
        for cand in self._candidates:  # resumable: a broken stream continues from here
            if self.calls_in_leg >= self.leg_max or not self._eligible(cand):  # exhausted()
                continue
            index = self.fallback_index
            self.fallback_index += 1
            while True:
                try:
                    try:
                        guard, result = await self._once(cand, 0, index, streaming)
                    except ProviderError as exc:
                        retry = cand.route.retry
                        if retry.max_retries == 0 or not self._retryable(exc, cand):
                            raise
                        await self.svc.clock.sleep(self._delay(exc, 1, retry))
                        guard, result = await self._retries(cand, index, streaming)
                    return cand, guard, result
                except Skip:
                    break
                except InvalidRequestError:
                    raise  # no other candidate would accept it either
                except ProviderError as exc:
                    if not self._try_again(cand, exc):
                        break
        raise self._final_error()

    def _final_error(self) -> EngineError:
        calls = [a for a in self.attempts if a.key_id is not None]  # skips carry no key
        if (
            not calls
            and self.attempts
            and all(a.outcome == "budget_exceeded" for a in self.attempts)
        ):
            return BudgetExceededError(
                "no candidate fits the budget: "
                + "; ".join(f"{a.model}: {a.error}" for a in self.attempts)
            )
        if not self.attempts:
            return NoCandidateError("no candidate could be tried", self.eliminated)
        return AllCandidatesFailedError(self.attempts)

    def _try_again(self, cand: Candidate, exc: ProviderError) -> bool:
        """After a candidate's tries failed with `exc`: try it again (with another key of
        its provider), or move on (False), noting what the failure rules out."""
        if isinstance(exc, AuthenticationError):
            keyed = bool(cand.provider.keys)
            if keyed and self.svc.good_keys(cand.provider) and not self.exhausted():
                return True  # another key of the same provider
            self.skip_providers |= {cand.provider.id}
        elif isinstance(exc, PermissionDeniedError):
            self.skip_providers |= {cand.provider.id}
        elif isinstance(exc, ContextWindowExceededError):
            self.min_window = max(self.min_window, cand.model.context_window, 1)
        return False

    async def _retries(
        self, cand: Candidate, index: int, streaming: bool
    ) -> tuple[Guard, ProviderResponse | OpenStream]:
        """The tries after a retryable first failure, with tenacity's stop/wait/retry."""
        retry = cand.route.retry
        retrying = AsyncRetrying(
            stop=stop_after_attempt(retry.max_retries),
            wait=lambda state: self._wait(state, retry),
            retry=retry_if_exception(lambda e: self._retryable(e, cand)),
            sleep=self.svc.clock.sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._once(cand, attempt.retry_state.attempt_number, index, streaming)
        raise AssertionError("unreachable: tenacity either returns or re-raises")

    def _retryable(self, exc: BaseException, cand: Candidate) -> bool:
        if not isinstance(exc, ProviderError) or not exc.retryable or self.exhausted():
            return False
        retry = cand.route.retry
        if exc.kind not in retry.retry_on:
            return False
        # A provider asking for a longer pause than the cap is better failed over from.
        return exc.retry_after is None or exc.retry_after <= retry.max_retry_after_s

    def _wait(self, state: RetryCallState, retry: RetryPlan) -> float:
        exc = state.outcome.exception() if state.outcome else None
        # tenacity counts from the first retry; the bare first try came before it
        return self._delay(exc, state.attempt_number + 1, retry)

    def _delay(self, exc: BaseException | None, failures: int, retry: RetryPlan) -> float:
        """Retry-After when the provider gave one, else exponential backoff with jitter."""
        if isinstance(exc, ProviderError) and exc.retry_after is not None:
            return max(0.0, exc.retry_after)
        base = retry.backoff_initial_s * retry.multiplier ** (failures - 1)
        base = min(base, retry.backoff_max_s)
        if retry.jitter:
            base = base / 2 + self.svc.rng.random() * base / 2
        return base

    # -- results --------------------------------------------------------------------------

    def response(self, cand: Candidate, resp: ProviderResponse, cost: float | None) -> Response:
        # `created` given rather than left to its default factory: one call fewer.
        return _response(
            resp.content,
            resp.tool_calls,
            resp.finish_reason,
            resp.usage,
            cost,
            cand.provider.id,
            cand.model.id,
            (self.svc.clock.monotonic() - self.started) * 1000,
            tuple(self.attempts),
            False,
            cand.policy,
            cand.rule,
            "chatcmpl-" + self.request_id,
            int(time.time()),
        )

    def cache_key(self) -> str | None:
        """The cache key when the primary route caches and the caller did not bypass it."""
        if not (self.route.cache.enabled and self.request.cache):
            return None
        target = self.primary.target if self.primary is not None else ""
        return self.svc.cache_key(self.request, target)

    def cached_hit(self, hit: Response) -> Response:
        """A cache hit as this call's answer: costs nothing, recorded as cached."""
        latency = (self.svc.clock.monotonic() - self.started) * 1000
        self.svc.ledger.record(
            LedgerRow(
                self.svc.clock.time(),
                self.workspace,
                hit.policy,
                hit.provider,
                hit.model,
                0,
                0,
                0.0,
                latency,
                "ok",
                0,
                self.request_id,
                cached=True,
            )
        )
        return replace(
            hit,
            cached=True,
            cost_usd=0.0,
            latency_ms=latency,
            attempts=(),
            id=f"chatcmpl-{self.request_id}",
        )

    # -- the two ways a call ends ---------------------------------------------------------

    def close(self) -> None:
        """Finish the candidate walk. Its suspended generator frame refers back to this
        object; closing it breaks that cycle, so a finished call is freed by reference
        counting at once instead of waiting for (and feeding) the cyclic garbage collector."""
        self._candidates.close()

    async def run(self) -> Response:
        """The whole non-streaming call: cache, failover, settle, stats."""
        # One coroutine for the whole call (no _run, complete or succeed of its own to
        # await): each level of coroutine costs every call a frame and an await.
        try:
            primary = self.primary  # self.route and cache_key's test, inlined
            cache = (primary.route if primary is not None else PIN_ROUTE).cache
            key = self.cache_key() if cache.enabled and self.request.cache else None
            if key is not None:
                hit = self.svc.cache.get(key)
                if isinstance(hit, Response):
                    self.svc.stats.request(True, 0.0, cached=True)
                    return self.cached_hit(hit)
            try:
                cand, guard, resp = await self._first_success(streaming=False)
            except EngineError:
                self.svc.stats.request(False)
                raise
            assert isinstance(resp, ProviderResponse)
            cost = self.settle_success(guard, resp.usage, resp.rate_limit)
            if guard.reservation is not None:
                await self.settle_budget(guard, cost)
            out = self.response(cand, resp, cost)
            u = resp.usage
            self.svc.stats.request(
                True, cost, u.input_tokens, u.output_tokens, False, guard.fallback_index > 0
            )
            if key is not None:
                self.svc.cache.put(key, out, cache.ttl_s)
            return out
        finally:
            self.close()

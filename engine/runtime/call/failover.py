"""The failover loop: one loop for every kind of call, walking candidates until one answers.

    for each candidate of the walk (walk.py), with its fallback index:
        first try, bare        admitted, one adapter operation, closed (attempt.py)
        retries                the route's RetryPolicy (retry.py) through tenacity,
                               while the failure is retryable and the leg has tries left
                               and while the leg has tries to spare (each candidate
                               still waiting in it keeps one: Walk.no_spare)
        after the last failure auth error: another key of the provider, else skip the
                               provider for this call; permission denied, or the
                               provider unreachable (refused, DNS, TLS, connect timeout;
                               never retried): skip the provider; context window: skip
                               windows not larger; invalid request: fail the call at once
                               (nobody would take it)
    until one answers; else the final error (errors.all_failed: typed when every attempt
    failed the same way), or why nothing was tried

The loop is resumable: a stream that breaks after it opened asks for the next answer and
the walk continues where it stopped. What the loop returns is an `Answer`; finishing it
(response, stats, cache) is the caller's single `finish`.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import TypeVar

from engine.errors import (
    AuthenticationError,
    BudgetExceededError,
    ContextWindowExceededError,
    EngineError,
    InvalidRequestError,
    NoCandidateError,
    PermissionDeniedError,
    ProviderError,
    all_failed,
)
from engine.messages import Request
from engine.plan.values import RoutePlan
from engine.runtime.call.admission import Admission, Skip
from engine.runtime.call.attempt import Attempt
from engine.runtime.call.data import CallData, Trail
from engine.runtime.call.operations import Answer, Operation, make_answer
from engine.runtime.call.walk import Candidate, Walk
from engine.runtime.services import Services
from engine.runtime.templates import apply_template

T = TypeVar("T")


class Failover:
    """The candidates of one call, tried in turn through one adapter operation."""

    __slots__ = ("_last", "_rendered", "admission", "call", "svc", "trail", "walk")

    def __init__(self, svc: Services, call: CallData, trail: Trail, walk: Walk) -> None:
        self.svc, self.call, self.trail, self.walk = svc, call, trail, walk
        self.admission = Admission(svc, call, trail)
        self._rendered: dict[int, Request] = {}
        self._last: ProviderError | None = None  # the latest failure, for the final error

    async def answer(self, op: Operation[T]) -> Answer[T]:
        """The next candidate's answer; the final error when none is left.

        The first try at a candidate runs bare: tenacity's machinery costs 10-30 us each
        time it is set up (measured), more than the engine's own work per call, so it is
        set up (`_retry`) only after a failure."""
        for index, cand in self.walk:
            while True:
                try:
                    try:
                        return await self._try(op, cand, 0, index)
                    except ProviderError as exc:
                        return await self._retry(op, cand, index, exc)
                except Skip:
                    break
                except InvalidRequestError:
                    raise  # no other candidate would accept it either
                except ProviderError as exc:
                    self._last = exc
                    if not self._again(cand, exc):
                        break
        raise self.final_error()

    async def _retry(
        self, op: Operation[T], cand: Candidate, index: int, exc: ProviderError
    ) -> Answer[T]:
        """The tries after a first one failed with `exc`, as the route's RetryPolicy
        decides; `exc` itself when it is not retried."""
        policy = self.svc.retries.of(cand.route.retry)
        if not policy.retries(exc) or self.walk.no_spare():
            raise exc
        failed: ProviderError | None = exc
        async for attempt in policy.retrying(self.walk.no_spare):
            with attempt:
                if failed is not None:  # the bare try, replayed as tenacity's attempt 1
                    first, failed = failed, None
                    raise first
                return await self._try(op, cand, attempt.retry_state.attempt_number - 1, index)
        raise AssertionError("unreachable: tenacity returns or re-raises")

    async def _try(self, op: Operation[T], cand: Candidate, retry: int, index: int) -> Answer[T]:
        """One try. What can fail on the caller's side (template, protocol) fails before
        admission, so nothing is left held."""
        request = self._request_for(cand.route)
        adapter = self.svc.adapter_for(cand.provider.protocol)
        attempt = Attempt(self.admission, cand, request, retry, index)
        if op.holds:
            async with AsyncExitStack() as stack:
                await stack.enter_async_context(attempt)
                self.walk.count_try()
                value = await op(adapter, attempt)
                return make_answer(attempt=attempt, value=value, held=stack.pop_all())
        async with attempt:
            self.walk.count_try()
            value = await op(adapter, attempt)
        return make_answer(attempt=attempt, value=value, held=None)

    def _request_for(self, route: RoutePlan) -> Request:
        """The request with this route's template applied (rendered once per route)."""
        if route.template is None:
            return self.call.request
        req = self._rendered.get(id(route))
        if req is None:
            req = self._rendered[id(route)] = apply_template(
                route.template, self.call.request, route.policy
            )
        return req

    def _again(self, cand: Candidate, exc: ProviderError) -> bool:
        """After a candidate's tries failed with `exc`: try it again (with another key of
        its provider), or move on (False), noting what the failure rules out."""
        provider, walk = cand.provider, self.walk
        if isinstance(exc, AuthenticationError):
            if provider.keys and self.svc.good_keys(provider) and not walk.exhausted():
                return True
            walk.rule_out_provider(provider.id, "provider refused this request's credentials")
        elif isinstance(exc, PermissionDeniedError):
            walk.rule_out_provider(provider.id, "provider refused this request's credentials")
        elif exc.unreachable:
            walk.rule_out_provider(provider.id, f"provider unreachable this call: {exc}")
        elif isinstance(exc, ContextWindowExceededError):
            self.walk.rule_out_window(cand.model.context_window)
        return False

    def final_error(self) -> EngineError:
        """Why the call failed: over budget, nothing tried, or every attempt."""
        attempts = self.trail.attempts
        if (
            attempts
            and not self.trail.calls()
            and all(a.outcome == "budget_exceeded" for a in attempts)
        ):
            return BudgetExceededError(
                "no candidate fits the budget: "
                + "; ".join(f"{a.model}: {a.error}" for a in attempts)
            )
        if not attempts:
            return NoCandidateError("no candidate could be tried", self.trail.eliminated)
        return all_failed(attempts, self._last)

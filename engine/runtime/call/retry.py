"""A route's retry plan, compiled once into tenacity's composed objects.

    retry   retry_if_exception(kind in retry_on) & retry_if_exception(Retry-After <= cap)
            (a provider asking for a longer pause than the cap is better failed over from;
            one that cannot be reached at all is never retried: another provider is
            likelier to answer than the same refused address a moment later)
    wait    wait_retry_after(otherwise = backoff), where backoff is wait_exponential
            (initial * multiplier ** n, capped at backoff_max_s), with equal jitter when
            the plan asks for it (half the wait fixed, half drawn from the engine's rng)
    stop    stop_after_attempt(max_retries + 1) | stop_when(the leg has no try to spare:
            those left are owed to the candidates still waiting)
    sleep   the engine's injected clock, so tests never wait

The first try at a candidate runs bare (see failover.py); when it fails, `AsyncRetrying`
takes over with that failure as its attempt 1, so every wait, stop and retry decision is
tenacity's.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from engine.errors import ProviderError
from engine.plan.values import RetryPlan

Sleep = Callable[[float], Awaitable[None]]

#: Compiled policies kept per engine before the cache starts over (plans change on reload).
POLICY_CACHE_MAX = 256


class wait_retry_after(wait_base):  # named like tenacity's own
    """The provider's Retry-After when it gave one, else the `otherwise` wait."""

    def __init__(self, otherwise: wait_base) -> None:
        self.otherwise = otherwise

    def __call__(self, retry_state: RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, ProviderError) and exc.retry_after is not None:
            return max(0.0, exc.retry_after)
        return self.otherwise(retry_state)


class wait_equal_jitter(wait_base):
    """Half of `inner`'s wait fixed, the other half drawn uniformly from `rng`."""

    def __init__(self, inner: wait_base, rng: random.Random) -> None:
        self.inner, self.rng = inner, rng

    def __call__(self, retry_state: RetryCallState) -> float:
        base = self.inner(retry_state)
        return base / 2 + self.rng.random() * base / 2


class stop_when(stop_base):
    """Stop as soon as `spent()` says so (the candidate's leg has no tries left)."""

    def __init__(self, spent: Callable[[], bool]) -> None:
        self.spent = spent

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.spent()


class RetryPolicy:
    """One RetryPlan as tenacity objects; built once per plan and engine."""

    __slots__ = ("_retrying", "plan", "retry", "stop", "wait")

    def __init__(self, plan: RetryPlan, sleep: Sleep, rng: random.Random) -> None:
        self.plan = plan
        self.retry = retry_if_exception(self._kind_retried) & retry_if_exception(self._pause_ok)
        backoff: wait_base = wait_exponential(
            multiplier=plan.backoff_initial_s, exp_base=plan.multiplier, max=plan.backoff_max_s
        )
        self.wait = wait_retry_after(wait_equal_jitter(backoff, rng) if plan.jitter else backoff)
        self.stop = stop_after_attempt(plan.max_retries + 1)  # the bare first try counts
        self._retrying = AsyncRetrying(
            stop=self.stop, wait=self.wait, retry=self.retry, sleep=sleep, reraise=True
        )

    def retries(self, exc: BaseException) -> bool:
        """Would this failure of a first try be retried (leg budget aside)? The question
        `retry` answers, asked before any tenacity object is made."""
        return self.plan.max_retries > 0 and self._kind_retried(exc) and self._pause_ok(exc)

    def retrying(self, spent: Callable[[], bool]) -> AsyncRetrying:
        """A fresh AsyncRetrying (one per candidate: tenacity keeps its state on it) that
        also stops when `spent()`."""
        return self._retrying.copy(stop=self.stop | stop_when(spent))

    def _kind_retried(self, exc: BaseException) -> bool:
        return (
            isinstance(exc, ProviderError)
            and exc.retryable
            and exc.kind in self.plan.retry_on
            and not exc.unreachable
        )

    def _pause_ok(self, exc: BaseException) -> bool:
        after = exc.retry_after if isinstance(exc, ProviderError) else None
        return after is None or after <= self.plan.max_retry_after_s


class RetryPolicies:
    """The compiled RetryPolicy of each RetryPlan an engine has met."""

    __slots__ = ("_policies", "_rng", "_sleep")

    def __init__(self, sleep: Sleep, rng: random.Random) -> None:
        self._sleep, self._rng = sleep, rng
        self._policies: dict[RetryPlan, RetryPolicy] = {}

    def of(self, plan: RetryPlan) -> RetryPolicy:
        policy = self._policies.get(plan)
        if policy is None:
            if len(self._policies) >= POLICY_CACHE_MAX:
                self._policies.clear()
            policy = self._policies[plan] = RetryPolicy(plan, self._sleep, self._rng)
        return policy

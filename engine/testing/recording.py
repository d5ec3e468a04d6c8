"""Recording wrappers for any rate limiter or budget store: every call kept, in order.

    limiter = RecordingRateLimiter(InProcessRateLimiter(clock))
    budget = RecordingBudgetStore(InProcessBudgetStore(clock))
    eng = Engine.from_data(models, routes, rate_limiter=limiter, budget=budget)
    ...
    assert limiter.methods() == ["try_acquire_nowait", "settle", "observe"]
    assert limiter.open_leases == 0 and budget.open_reservations == 0

Each wrapper implements its protocol by delegating to the backend it wraps (so the
behaviour is the backend's, fast path included) and appends a `Call` per method: its
name, its arguments, and what it returned or raised. Also what a protocol test suite
uses to check that a backend was driven as the runtime promises.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from engine.messages import RateLimitInfo
from engine.plan.values import KeyPlan
from engine.state.protocols import (
    BudgetStore,
    Lease,
    RateLimiter,
    Reservation,
    SpendSource,
)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Call:
    """One call to a wrapped backend: what was asked, and how it ended."""

    method: str
    args: tuple[Any, ...]
    result: Any = None
    error: BaseException | None = None


class _Recorder:
    """The call log both wrappers share."""

    def __init__(self) -> None:
        self.calls: list[Call] = []

    def methods(self) -> list[str]:
        """The names of the calls so far, in order."""
        return [c.method for c in self.calls]

    def called(self, method: str) -> list[Call]:
        """The calls to one method, in order."""
        return [c for c in self.calls if c.method == method]

    def _log(self, method: str, args: tuple[Any, ...], result: T) -> T:
        self.calls.append(Call(method, args, result))
        return result

    def _failed(self, method: str, args: tuple[Any, ...], exc: BaseException) -> None:
        self.calls.append(Call(method, args, error=exc))

    def _closed(self, opened: Sequence[str], closing: Sequence[str]) -> int:
        """How many values returned by `opened` methods no `closing` call has taken back."""
        given = {id(c.result): c.result for c in self.calls if c.method in opened and c.result}
        for c in self.calls:
            if c.method in closing and c.error is None:
                given.pop(id(c.args[0]), None)
        return len(given)


class RecordingRateLimiter(_Recorder):
    """Implements `engine.state.protocols.RateLimiter` around another one."""

    def __init__(self, inner: RateLimiter) -> None:
        super().__init__()
        self.inner = inner

    @property
    def open_leases(self) -> int:
        """Leases handed out and not yet settled or released."""
        return self._closed(("try_acquire_nowait", "acquire"), ("settle", "release"))

    def try_acquire_nowait(
        self, provider: str, keys: Sequence[KeyPlan], input_tokens: int, output_tokens: int
    ) -> Lease | None:
        args = (provider, tuple(keys), input_tokens, output_tokens)
        lease = self.inner.try_acquire_nowait(*args)
        return self._log("try_acquire_nowait", args, lease)

    async def acquire(
        self,
        provider: str,
        keys: Sequence[KeyPlan],
        input_tokens: int,
        output_tokens: int,
        max_wait_s: float,
    ) -> Lease:
        args = (provider, tuple(keys), input_tokens, output_tokens, max_wait_s)
        try:
            lease = await self.inner.acquire(*args)
        except BaseException as exc:
            self._failed("acquire", args, exc)
            raise
        return self._log("acquire", args, lease)

    async def settle(self, lease: Lease, input_tokens: int, output_tokens: int) -> None:
        await self.inner.settle(lease, input_tokens, output_tokens)
        self._log("settle", (lease, input_tokens, output_tokens), None)

    async def release(self, lease: Lease) -> None:
        await self.inner.release(lease)
        self._log("release", (lease,), None)

    async def observe(self, provider: str, key_id: str, info: RateLimitInfo) -> None:
        await self.inner.observe(provider, key_id, info)
        self._log("observe", (provider, key_id, info), None)

    def register(self, provider: str, keys: Sequence[KeyPlan]) -> None:
        self.inner.register(provider, keys)
        self._log("register", (provider, tuple(keys)), None)

    async def status(self, provider: str) -> dict[str, Any]:
        return self._log("status", (provider,), await self.inner.status(provider))

    async def aclose(self) -> None:
        await self.inner.aclose()
        self._log("aclose", (), None)


class RecordingBudgetStore(_Recorder):
    """Implements `engine.state.protocols.BudgetStore` around another one."""

    def __init__(self, inner: BudgetStore) -> None:
        super().__init__()
        self.inner = inner

    @property
    def open_reservations(self) -> int:
        """Reservations made and not yet settled or released."""
        return self._closed(("reserve",), ("settle", "release"))

    async def restore(self, source: SpendSource) -> None:
        await self.inner.restore(source)
        self._log("restore", (source,), None)

    def reserve(
        self,
        workspace: str,
        amount_usd: float,
        daily_usd: float | None,
        monthly_usd: float | None,
        total_usd: float | None = None,
    ) -> Awaitable[Reservation]:
        args: tuple[Any, ...] = (workspace, amount_usd, daily_usd, monthly_usd)
        if total_usd is not None:
            args += (total_usd,)
        try:
            pending = self.inner.reserve(*args)
        except BaseException as exc:
            self._failed("reserve", args, exc)
            raise
        return self._reserved(args, pending)

    async def _reserved(
        self, args: tuple[Any, ...], pending: Awaitable[Reservation]
    ) -> Reservation:
        try:
            reservation = await pending
        except BaseException as exc:
            self._failed("reserve", args, exc)
            raise
        return self._log("reserve", args, reservation)

    async def settle(self, reservation: Reservation, actual_usd: float) -> None:
        await self.inner.settle(reservation, actual_usd)
        self._log("settle", (reservation, actual_usd), None)

    async def release(self, reservation: Reservation) -> None:
        await self.inner.release(reservation)
        self._log("release", (reservation,), None)

    async def spent(self, workspace: str) -> Mapping[str, float]:
        return self._log("spent", (workspace,), await self.inner.spent(workspace))

    async def aclose(self) -> None:
        await self.inner.aclose()
        self._log("aclose", (), None)

"""The interfaces behind which the runtime keeps its live state.

Each has an in-process default (engine/runtime/<name>.py); a shared backend (Redis,
Postgres) can replace any of them when one engine becomes many instances behind a load
balancer, without the executor changing. All methods are non-blocking or async; none may
block the event loop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from engine.messages import RateLimitInfo
from engine.plan.values import KeyPlan


@dataclass(frozen=True, slots=True)
class Lease:
    """Permission to send one request with one key; settle it with the real usage."""

    provider: str
    key: KeyPlan
    input_tokens: int
    output_tokens: int


class RateLimiter(Protocol):
    async def acquire(
        self,
        provider: str,
        keys: Sequence[KeyPlan],
        input_tokens: int,
        output_tokens: int,
        max_wait_s: float,
    ) -> Lease:
        """Pick the key with most headroom; wait up to max_wait_s; else raise RateLimitedError."""
        ...

    def settle(self, lease: Lease, input_tokens: int, output_tokens: int) -> None:
        """Correct the estimate with real usage."""
        ...

    def release(self, lease: Lease) -> None:
        """Refund a lease whose request was never sent (budget refused, cancelled)."""
        ...

    def observe(self, provider: str, key_id: str, info: RateLimitInfo) -> None:
        """Learn limits and remaining headroom from the provider's headers."""
        ...

    def status(self, provider: str) -> dict[str, Any]:
        """Remaining/limit per key and how many requests are queued."""
        ...


@dataclass(frozen=True, slots=True)
class Reservation:
    workspace: str
    amount_usd: float
    token: int  # identifies the reservation for settle/release


class BudgetStore(Protocol):
    async def reserve(
        self,
        workspace: str,
        amount_usd: float,
        daily_usd: float | None,
        monthly_usd: float | None,
    ) -> Reservation:
        """Reserve the worst case atomically, or raise BudgetExceededError."""
        ...

    async def settle(self, reservation: Reservation, actual_usd: float) -> None: ...

    async def release(self, reservation: Reservation) -> None: ...

    def spent(self, workspace: str) -> Mapping[str, float]:
        """{"day": usd, "month": usd} including open reservations."""
        ...


class ResponseCache(Protocol):
    def get(self, key: str) -> Any | None: ...

    def put(self, key: str, value: Any, ttl_s: float) -> None: ...

    def clear(self) -> None: ...

    def stats(self) -> Mapping[str, int]: ...


@dataclass(frozen=True, slots=True)
class LedgerRow:
    """One attempt as recorded. Never holds a key or a prompt."""

    ts: float
    workspace: str | None
    policy: str | None
    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    latency_ms: float
    outcome: str
    fallback_index: int
    request_id: str = ""
    cached: bool = False
    client: str | None = None  # the label (id) of the calling API key, never the key itself


class Ledger(Protocol):
    def record(self, row: LedgerRow) -> None:
        """Queue a row; writing happens off the hot path."""
        ...

    async def flush(self) -> None: ...

    async def aclose(self) -> None: ...

    def totals(
        self, workspace: str | None, since: float, by: str
    ) -> Sequence[Mapping[str, Any]]: ...

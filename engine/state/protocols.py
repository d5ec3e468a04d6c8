"""The interfaces behind which the engine keeps its live state, and the values they pass.

One engine in one process uses the in-process backends (engine/state/<backend>.py); a
shared backend (Redis, Postgres) replaces any of them when one engine becomes many
replicas, without the runtime changing. So the protocols are written for a store on the
other side of a network:

- every method that reads or changes shared state is `async`;
- the only synchronous calls are the ones declared as such below, and each says why it
  never needs the network: `RateLimiter.try_acquire_nowait` (a fast path a backend may
  decline by returning None), `BudgetStore.reserve` (which starts a reservation and
  returns an awaitable of it), `RateLimiter.register` and `ResponseCache.stats/resize`
  (local bookkeeping), `Ledger.record` (a local journal write and an enqueue);
- every capability the runtime uses is a method here, with its default behaviour
  documented, so nothing is looked up by `getattr` or by scanning a class.

A new backend is one module with classes implementing these protocols; the state test
suite (tests/state/test_protocols_*.py) takes it as one more parameter.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from engine.messages import RateLimitInfo
from engine.plan.values import KeyPlan

# -- rate limits ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Lease:
    """Permission to send one request with one key; settle it with the real usage."""

    provider: str
    key: KeyPlan
    input_tokens: int
    output_tokens: int


class RateLimiter(Protocol):
    """Client-side rate limits per provider key (requests and tokens per minute)."""

    def try_acquire_nowait(
        self, provider: str, keys: Sequence[KeyPlan], input_tokens: int, output_tokens: int
    ) -> Lease | None:
        """A lease at once when one can be had without waiting or I/O; else None, having
        taken nothing, and the caller awaits `acquire`. The runtime tries this first (most
        attempts find room, and then cost no coroutine). A backend without a local fast
        path (a networked one) returns None always; so does a wrapper that must see
        every acquisition in `acquire`."""
        ...

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

    async def settle(self, lease: Lease, input_tokens: int, output_tokens: int) -> None:
        """Correct the lease's estimate with real usage; a second settle or release is ignored."""
        ...

    async def release(self, lease: Lease) -> None:
        """Refund a lease whose request was never sent (budget refused, cancelled)."""
        ...

    async def observe(self, provider: str, key_id: str, info: RateLimitInfo) -> None:
        """Learn limits, remaining headroom and Retry-After from the provider's headers."""
        ...

    def register(self, provider: str, keys: Sequence[KeyPlan]) -> None:
        """Make these keys known (so `status` lists them before their first request).
        Local bookkeeping, no I/O; a backend with nothing to learn does nothing."""
        ...

    async def status(self, provider: str) -> dict[str, Any]:
        """{"provider", "queued", "keys": {key id: per-dimension limit/remaining/used,
        in_flight, blocked_for_s}}; key ids only, never a secret."""
        ...

    async def aclose(self) -> None:
        """Give back connections or threads; a backend without any does nothing."""
        ...


# -- budgets -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reservation:
    workspace: str
    amount_usd: float
    token: int  # identifies the reservation for settle/release


class SpendSource(Protocol):
    """Where a budget store restores spend from at start (every `Ledger` is one)."""

    async def spend_since(self, since: float) -> Sequence[tuple[str, str, float]]:
        """`(workspace, 'YYYY-MM-DD', usd)`: settled known costs per workspace and UTC day."""
        ...


class BudgetStore(Protocol):
    """Per-workspace daily and monthly limits that concurrent calls cannot overspend."""

    async def restore(self, source: SpendSource) -> None:
        """Bring this month's settled spend in from the ledger. The engine awaits it once,
        before its first reservation. A store whose own record outlives the process
        (SQLite, Redis) takes it the first time it is used and then ignores it; an
        in-process store takes it once per store object."""
        ...

    def reserve(
        self,
        workspace: str,
        amount_usd: float,
        daily_usd: float | None,
        monthly_usd: float | None,
        total_usd: float | None = None,
    ) -> Awaitable[Reservation]:
        """Reserve the worst case atomically, or raise BudgetExceededError (at once or when
        awaited). `total_usd` is an all-time limit, which only a store built with
        `totals=True` keeps (the client-key scope, engine.runtime.clients); any other store
        raises ValueError for one.

        The reservation starts when this is called and is read when awaited, so admission
        takes its rate-limit lease in between: a local store decides at once, a shared
        store sends its request before returning (Redis then answers lease and hold in one
        round trip). An `async def` implementation is fine too; it starts when awaited.
        Why not a task around it: a task and its loop turn cost ~55k instructions a call."""
        ...

    async def settle(self, reservation: Reservation, actual_usd: float) -> None:
        """Replace the reservation by the real cost; idempotent (with release)."""
        ...

    async def release(self, reservation: Reservation) -> None:
        """Drop the reservation (the call failed or was cancelled); idempotent."""
        ...

    async def spent(self, workspace: str) -> Mapping[str, float]:
        """{"day": usd, "month": usd} including open reservations (and "total" when the
        store keeps all-time totals)."""
        ...

    async def aclose(self) -> None:
        """Give back files, connections or threads; a store without any does nothing."""
        ...


# -- the response cache --------------------------------------------------------------------


class ResponseCache(Protocol):
    """Exact-match answers under a `cache_key` string, each with its own TTL."""

    async def get(self, key: str) -> Any | None:
        """The stored value, or None when absent or expired."""
        ...

    async def put(self, key: str, value: Any, ttl_s: float) -> None:
        """Store `value` for `ttl_s` seconds; a non-positive TTL stores nothing."""
        ...

    async def clear(self) -> None:
        """Forget every entry."""
        ...

    def stats(self) -> Mapping[str, int]:
        """This process's counters (hits, misses, ...); local, no I/O."""
        ...

    def resize(self, max_entries: int) -> None:
        """The plan's largest `cache.max_entries` changed (on reload); a backend that is
        not bounded by entries ignores it. Local, no I/O."""
        ...


# -- the cost ledger -----------------------------------------------------------------------


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
    cache_read_tokens: int = 0  # parts of input_tokens / output_tokens, priced apart
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0


class Ledger(SpendSource, Protocol):
    """Every attempt, for cost reports and for restoring budgets at start.

    Durability: `record` runs on every attempt and must not wait for a store or a
    network; the SQLite and Postgres ledgers write the row to a local journal (one
    copy into a shared file mapping, engine.state.journal) before returning, so a row
    recorded before its answer leaves survives `kill -9`, and is stored (once: rows
    carry an id) when the ledger is next opened. A row is in the store itself once
    `flush()` has returned; `aclose()` flushes.
    """

    def record(self, row: LedgerRow) -> None:
        """Take a row (journaled, where the backend has a journal); storing it happens off
        the hot path, and never raises into a call."""
        ...

    async def flush(self) -> None:
        """Return once every row recorded before this call is durable."""
        ...

    async def aclose(self) -> None:
        """Flush, then stop writing; idempotent."""
        ...

    async def totals(
        self, workspace: str | None, since: float, by: str
    ) -> Sequence[Mapping[str, Any]]:
        """Per `by` value (model, provider, workspace, policy, outcome, client): attempts, ok,
        cached, tokens, cost_usd (known costs) and unknown_cost (rows without one)."""
        ...

    async def daily(self, workspace: str | None, since: float) -> Sequence[Mapping[str, Any]]:
        """One row per UTC day ("day": 'YYYY-MM-DD') with the same figures as `totals`."""
        ...


# -- breaker openings shared between replicas ------------------------------------------------


class BreakerSignal(Protocol):
    """Optional: a replica whose breaker opens tells the others, which skip that provider
    or model for the same cooldown instead of each paying its own failures to find out.
    Breakers themselves stay per replica; this only carries the news of an opening."""

    async def start(self, on_open: Callable[[str, float], None]) -> None:
        """Begin hearing other replicas' openings: `on_open(key, seconds left)`, called on
        the event loop, for openings already in force and for each new one."""
        ...

    def publish(self, key: str, cooldown_s: float) -> None:
        """Tell the other replicas this breaker just opened (sent in the background)."""
        ...

    async def aclose(self) -> None:
        """Stop listening; give back connections."""
        ...

"""Client-key budgets: the workspace budget mechanism, once more, scoped by API key id.

Why here and not in the server: a key's budget must be reserved for the worst case of
each try before it goes out and settled with the real cost after, exactly as a
workspace's is, or concurrent requests each pass a check made before any of them was
charged (300 requests at 100 concurrent spent $0.0515 of a $0.01 key budget that way).
Only admission knows a try's worst case, so a call whose metadata names a client key
(`client`, set by the server from the authenticated key, never from the body) reserves
against that key here too, beside its workspace, in a second `BudgetStore` of the same
backend (in-process, the workers' SQLite file, or Redis), built with `scope="API key"`
and `totals=True` so `budget_usd` can stay an all-time cap.

The limits per key id are set by whoever knows the keys (the server: from server.yaml and
the admin API) with `set`; a key without limits reserves nothing. Spend is restored from
the ledger's `client` column at start (engine.state.client_spend).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from engine.clock import Clock
from engine.state.client_spend import ClientSpend
from engine.state.protocols import BudgetStore, Ledger, Reservation


@dataclass(frozen=True, slots=True)
class ClientBudget:
    """One key's money limits in USD (None: no such limit)."""

    daily_usd: float | None = None
    monthly_usd: float | None = None
    total_usd: float | None = None  # all-time: server.yaml's `budget_usd`

    @property
    def limited(self) -> bool:
        return not (self.daily_usd is None and self.monthly_usd is None and self.total_usd is None)


class ClientBudgets:
    """The key-scoped budget store and each key's limits."""

    __slots__ = ("_limits", "store")

    def __init__(self, store: BudgetStore) -> None:
        self.store = store
        self._limits: Mapping[str, ClientBudget] = {}

    def set(self, limits: Mapping[str, ClientBudget]) -> None:
        """Replace every key's limits at once (keys without any are dropped)."""
        self._limits = {k: v for k, v in limits.items() if v.limited}

    def put(self, client: str, budget: ClientBudget | None) -> None:
        """Set (or, with None, drop) one key's limits: a key changed at run time."""
        limits = dict(self._limits)
        if budget is not None and budget.limited:
            limits[client] = budget
        else:
            limits.pop(client, None)
        self._limits = limits  # replaced whole: calls reading the old mapping are unaffected

    def of(self, client: str | None) -> ClientBudget | None:
        """The limits a call from `client` reserves against; None when it has none."""
        if client is None or not self._limits:
            return None
        return self._limits.get(client)

    async def reserve(self, client: str, budget: ClientBudget, amount_usd: float) -> Reservation:
        """Hold `amount_usd` against the key's day, month and total, or BudgetExceededError."""
        return await self.store.reserve(
            client, amount_usd, budget.daily_usd, budget.monthly_usd, budget.total_usd
        )

    async def spent(self, client: str) -> Mapping[str, float]:
        """The key's spend today, this month and all time, open holds included."""
        return await self.store.spent(client)

    async def restore(self, ledger: Ledger, clock: Clock) -> None:
        """Bring each key's spend in from the ledger (once, as the workspace store does)."""
        await self.store.restore(ClientSpend(ledger, clock))

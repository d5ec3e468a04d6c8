"""Workspace budgets: which daily/monthly caps every call of a workspace is held to, and
under which name its spend is booked.

Why a plan value of its own: a policy's `budget:` only binds the calls that go through
that policy, so a `provider/name` pin, a bare model name, a request fallback or a policy
without a budget used to spend with no cap at all, and every name a client invented had
a fresh budget. The workspace's budget is resolved once per call (`Wallets.of`), before
any candidate is tried, and admission reserves every try against it:

    models.yaml `workspaces:` declared
        a listed name      its own daily/monthly caps, booked under its own name
        any other name     `"*"`: ONE pool shared by every name not listed, booked under
                           `"*"` (inventing names does not multiply it); no `"*"`: only
                           the policies' own caps, per name
        a try's caps       the tighter of the workspace's and the try's policy's
    no `workspaces:`       every workspace is held, per name, to the tightest daily and
                           monthly cap any policy declares, for tries whose policy sets
                           none (a pin, a bare name, a budget-less policy); a policy's
                           own cap still binds the calls that go through it

Resolution allocates nothing: the wallets are built at compile time. A listed name and
the pool have a fixed bucket; `bucket=None` means "book under the call's own workspace
name", which the runtime bounds (engine/runtime/workspaces.py: at most 10,000 names a month
per process one by one, the rest in one overflow bucket under the same caps).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

#: The name of the pool that every workspace not listed shares (also its bucket).
OTHERS = "*"


class Wallet(NamedTuple):
    """One workspace's budget as a call sees it."""

    bucket: str | None  # the name spend is booked under; None: the call's own (bounded)
    daily_usd: float | None
    monthly_usd: float | None
    floor: bool  # True: caps bind every try (min with the policy's); False: only tries
    # whose policy declares no cap of that period (the implicit default)

    def caps(
        self, route_daily: float | None, route_monthly: float | None
    ) -> tuple[float | None, float | None]:
        """The daily and monthly caps one try is reserved against."""
        return (
            _combine(route_daily, self.daily_usd, self.floor),
            _combine(route_monthly, self.monthly_usd, self.floor),
        )

    def name(self, workspace: str) -> str:
        """The name the workspace's spend is booked under."""
        return workspace if self.bucket is None else self.bucket


def _combine(route: float | None, mine: float | None, floor: bool) -> float | None:
    if route is None:
        return mine
    if mine is None or not floor:
        return route
    return min(route, mine)


#: No workspace budget at all: only the policies' own caps, per workspace name.
UNCAPPED = Wallet(bucket=None, daily_usd=None, monthly_usd=None, floor=True)


@dataclass(frozen=True, slots=True)
class Wallets:
    """Every workspace's budget, compiled from models.yaml `workspaces:` and the policies."""

    named: Mapping[str, Wallet] = field(default_factory=dict)
    others: Wallet = UNCAPPED  # "*" (a pool) or the implicit default (per name)

    def of(self, workspace: str) -> Wallet:
        """The wallet a call in `workspace` spends from."""
        return self.named.get(workspace, self.others)

    def bucket(self, workspace: str) -> str:
        """The name the workspace's spend is booked under (a pool's, or its own)."""
        return self.of(workspace).name(workspace)


def declared(
    named: Mapping[str, tuple[float | None, float | None]],
    others: tuple[float | None, float | None] | None,
) -> Wallets:
    """Wallets from a `workspaces:` section: listed names, and `"*"` as one shared pool."""
    wallets = {
        name: Wallet(bucket=name, daily_usd=d, monthly_usd=m, floor=True)
        for name, (d, m) in named.items()
    }
    pool = UNCAPPED if others is None else Wallet(OTHERS, others[0], others[1], True)
    return Wallets(named=wallets, others=pool)


def implicit(daily: float | None, monthly: float | None) -> Wallets:
    """No `workspaces:`: each workspace held to the tightest caps the policies declare."""
    if daily is None and monthly is None:
        return Wallets()
    return Wallets(others=Wallet(bucket=None, daily_usd=daily, monthly_usd=monthly, floor=False))

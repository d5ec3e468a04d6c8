"""What the runtime needs to know about where its plan comes from, and plan helpers.

`PlanSource` is implemented by engine.compile.source (a config directory, or dicts) and
handed to the Engine by engine.assemble; the runtime sees only this protocol, so it never
imports the config loader or the compiler.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from engine.errors import ConfigError, Diagnostic
from engine.plan.compiled import Plan
from engine.plan.wallets import Wallets
from engine.state.protocols import SpendSource


class PlanSource(Protocol):
    """Where a plan comes from and how it changes at run time.

    Each method compiles the whole changed config and returns the new plan, keeping the
    change only when it compiled; it raises ConfigError (nothing changed) otherwise."""

    def reload(self) -> Plan: ...
    def add_provider(self, provider_id: str, spec: Mapping[str, Any]) -> Plan: ...
    def remove_provider(self, provider_id: str) -> Plan: ...
    def add_model(self, model_id: str, spec: Mapping[str, Any]) -> Plan: ...
    def remove_model(self, model_id: str) -> Plan: ...


def cache_size(plan: Plan) -> int:
    """One response cache serves every policy: it holds the largest `cache.max_entries` of
    the routes that enable caching (1000 when none does), so the setting is not ignored."""
    return max((r.cache.max_entries for r in plan.routes() if r.cache.enabled), default=1000)


def with_default_policy(plan: Plan, name: str | None) -> Plan:
    """The plan with `name` as its default policy; a name that is no policy is a ConfigError."""
    if name is None or name == plan.default_policy:
        return plan
    if name not in plan.policies:
        known = ", ".join(sorted(plan.policies)) or "none"
        raise ConfigError(
            [Diagnostic(f"default policy {name!r} (ENGINE_POLICY) is not a policy; known: {known}")]
        )
    return dataclasses.replace(plan, default_policy=name)


class PooledSpend:
    """The ledger's spend as the budget store books it: a workspace that spends from the
    `"*"` pool is restored into the pool, so a restart does not give the pool back."""

    def __init__(self, source: SpendSource, wallets: Wallets) -> None:
        self._source, self._wallets = source, wallets

    async def spend_since(self, since: float) -> Sequence[tuple[str, str, float]]:
        rows = await self._source.spend_since(since)
        bucket = self._wallets.bucket
        return [(bucket(workspace), day, usd) for workspace, day, usd in rows]

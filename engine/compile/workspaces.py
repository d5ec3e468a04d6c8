"""Compile workspace budgets: models.yaml `workspaces:` (or, without it, the tightest caps
the policies declare) into the plan's `Wallets` (engine.plan.wallets), with diagnostics.

What is checked, each at the entry's file:line: an entry with no cap, and a daily cap
above the monthly one (errors, as for a policy's budget); a `workspaces:` that lists
names but no `"*"` (a warning: every other name, including any a client invents, then
has no workspace budget of its own).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from engine.config.load import Document, join_path
from engine.config.specs import ModelsSpec, WorkspaceSpec
from engine.errors import Diagnostic
from engine.plan.values import RoutePlan
from engine.plan.wallets import OTHERS, Wallets, declared, implicit


def compile_wallets(
    spec: ModelsSpec, doc: Document, routes: Iterable[RoutePlan]
) -> tuple[Wallets, list[Diagnostic]]:
    """The plan's workspace budgets and what is wrong with their declaration."""
    if spec.workspaces is None:
        return _implicit(routes), []
    entries = spec.workspaces
    named = {name: _caps(w) for name, w in entries.items() if name != OTHERS}
    others = entries.get(OTHERS)
    return declared(named, None if others is None else _caps(others)), list(_problems(spec, doc))


def _caps(spec: WorkspaceSpec) -> tuple[float | None, float | None]:
    return spec.daily_usd, spec.monthly_usd


def _implicit(routes: Iterable[RoutePlan]) -> Wallets:
    """The tightest daily and the tightest monthly cap any policy declares."""
    daily: list[float] = []
    monthly: list[float] = []
    for route in routes:
        if route.budget.daily_usd is not None:
            daily.append(route.budget.daily_usd)
        if route.budget.monthly_usd is not None:
            monthly.append(route.budget.monthly_usd)
    return implicit(min(daily, default=None), min(monthly, default=None))


def _problems(spec: ModelsSpec, doc: Document) -> Iterator[Diagnostic]:
    entries = spec.workspaces or {}
    for name, w in entries.items():
        path = join_path("workspaces", name)
        d, m = w.daily_usd, w.monthly_usd
        if d is None and m is None:
            yield doc.diagnostic(path, "a workspace budget needs daily_usd or monthly_usd")
        elif d is not None and m is not None and d > m:
            yield doc.diagnostic(path, f"daily_usd {d} exceeds monthly_usd {m}")
    if entries and OTHERS not in entries:
        yield doc.diagnostic(
            "workspaces",
            "workspaces not listed here have no workspace budget: a client that names "
            "another workspace spends without one",
            hint='add `"*": {daily_usd: ..., monthly_usd: ...}`, one pool for every other name',
            severity="warning",
        )

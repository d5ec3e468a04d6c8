"""The server's client keys put together: the authenticator over its stores, and key views.

`authenticator` builds the `Authenticator` for one app: the static keys from the settings,
the per-key limiter and (when `admin_key` is set, which turns the admin API on) the key
registry, both from the composition root (in Redis with a state URL, else in process and a
SQLite file), and the engine's client-key budgets. `key_views` is what /v1/limits, the
dashboard and /v1/stats show per key: ids, limits and spend, never a key's text or digest.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.assemble import client_key_stores
from engine.errors import ConfigError
from engine.runtime.clients import ClientBudgets
from engine.server.auth import Authenticator, Principal, principal_of
from engine.server.common import RoutingEngine, ServerState
from engine.server.settings import SETTINGS_FILE, ServerSettings, load_settings

log = logging.getLogger("engine.server")


def authenticator(engine: RoutingEngine, settings: ServerSettings) -> Authenticator:
    """The app's Authenticator (see the module docstring)."""
    limiter, registry = client_key_stores(
        settings.config_dir,
        engine.plan,
        state_url=settings.state_url,
        registry=settings.admin_key is not None,
    )
    clients = getattr(engine, "clients", None)  # a stand-in engine in tests has none
    return Authenticator(
        settings.api_keys,
        limiter,
        registry,
        clients if isinstance(clients, ClientBudgets) else None,
        share=1 if settings.state_url else settings.workers,
    )


def watch_keys(state: ServerState) -> asyncio.Task[None]:
    """Poll server.yaml (as the config watcher polls models.yaml) and serve its `api_keys`
    as edited, without a restart; a broken edit is logged and the keys stay as they were."""
    return asyncio.create_task(_watch(state))


async def _watch(state: ServerState) -> None:
    settings = state.settings
    path = settings.config_dir / SETTINGS_FILE
    last = _stamp(path)
    while True:
        await asyncio.sleep(settings.reload_interval_s)
        now = _stamp(path)
        if now == last:
            continue
        last = now
        try:
            fresh = await asyncio.to_thread(load_settings, settings.config_dir)
        except ConfigError as exc:
            log.error("server.yaml change rejected; the API keys stay as they were")
            for d in exc.diagnostics:
                log.error("  %s", d.format())
            continue
        state.auth.replace_keys(fresh.api_keys)
        log.warning("API keys reloaded from %s (%d keys)", path, len(fresh.api_keys))


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


async def close_keys(auth: Authenticator) -> None:
    """Give back the limiter's and the registry's connections."""
    await auth.limiter.aclose()
    if auth.registry is not None:
        await auth.registry.aclose()


async def principals(auth: Authenticator) -> dict[str, tuple[str, Principal, bool]]:
    """Every key id -> (source, principal, revoked): server.yaml's, then the registry's
    records over them."""
    out = {k.id: ("server.yaml", principal_of(k), False) for k in auth.keys}
    if auth.registry is not None:
        for record in await auth.registry.all():
            source = "server.yaml (changed by the admin API)" if record.id in out else "admin"
            out[record.id] = (source, principal_of(record), record.revoked)
    return out


async def key_views(state: ServerState) -> dict[str, dict[str, Any]]:
    """Per key: source, workspace, budgets, request limits, spend; never a secret."""
    found = await principals(state.auth)
    spend = getattr(state.engine, "aclient_spent", None)  # restores from the ledger first
    spent = {k: await spend(k) for k in found} if spend is not None else {}
    out: dict[str, dict[str, Any]] = {}
    for key_id, (source, who, revoked) in sorted(found.items()):
        budget, limits = who.budget, who.limits
        out[key_id] = {
            "source": source,
            "revoked": revoked,
            "workspace": who.workspace,
            "budget_usd": budget and budget.total_usd,
            "daily_usd": budget and budget.daily_usd,
            "monthly_usd": budget and budget.monthly_usd,
            "rpm": limits and limits.rpm,
            "tpm": limits and limits.tpm,
            "max_concurrent": limits and limits.max_concurrent,
            "spent": dict(spent.get(key_id, {})),
        }
    return out


async def key_spend(state: ServerState) -> Mapping[str, float]:
    """Key id -> all-time spend (what `budget_usd` is checked against), for /v1/stats."""
    views = await key_views(state)
    return {k: float(v["spent"].get("total", 0.0)) for k, v in views.items()}

"""The operators' routes: health, limits, costs, explain, and usage recorded from outside.

    GET  /v1/health    per provider: status and why, breaker, pings, live error rate and
                       latency, usable keys
    GET  /v1/limits    per provider and key: remaining, limit, in flight, queued, blocked until
    GET  /v1/costs     spend from the configured ledger: `workspace`, `period` (day, month) or
                       `days` or `since`/`until` (YYYY-MM-DD or Unix time), `by` model,
                       provider, key, workspace, policy, outcome or day
    POST /v1/explain   the routing decision for a chat request body; no provider is called
    POST /v1/usage     record a call made outside the engine (stats, ledger, budget)

Auth: with `admin_key` set (server.yaml or ENGINE_ADMIN_KEY) the read-only ops routes
accept that key only; without it they take the client keys like every /v1 route, and a key
bound to a workspace sees that workspace's costs only. Explain and usage are client routes
(the admin key works too): usage is charged to the key's own workspace.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.requests import Request as HTTPRequest
from starlette.responses import Response as HTTPResponse
from starlette.routing import Route

from engine.assemble import default_ledger_path
from engine.errors import RequestError
from engine.messages import parse_request
from engine.runtime.record import ExternalCall
from engine.runtime.spend import DIMENSIONS, LocalSpend, SpendReader
from engine.server import aggregate
from engine.server.auth import ANONYMOUS, Principal
from engine.server.client_keys import key_views
from engine.server.common import (
    POLICY_HEADER,
    ServerState,
    decode_json,
    error_response,
    json_response,
    merge_metadata,
)
from engine.server.errors import INTERNAL, ServerError, to_http
from engine.state.backends import POSTGRES_SCHEMES
from engine.state.money import day_start, month_start

log = logging.getLogger("engine.server")

ADMIN = Principal("admin")
Handler = Callable[[HTTPRequest], Awaitable[HTTPResponse]]


def _state(request: HTTPRequest) -> ServerState:
    state: ServerState = request.app.state.server
    return state


async def caller(state: ServerState, header: str | None, admin_only: bool) -> Principal:
    """Who calls an ops route: the admin key, or (when allowed) any client key."""
    admin = state.settings.admin_key
    if admin is not None:
        scheme, _, token = (header or "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            admin.reveal().encode(), token.strip().encode()
        ):
            return ADMIN
        if admin_only:
            await state.auth.authenticate(header)  # a wrong key is 401 ...
            raise ServerError(  # ... a client key is 403
                403, "this route needs the admin key", "permission_error", "admin_only"
            )
    return await state.auth.authenticate(header)


def handled(admin_only: bool) -> Callable[[Callable[..., Awaitable[Any]]], Handler]:
    """Authenticate, run, and turn every failure into an OpenAI-style error body."""

    def wrap(fn: Callable[[ServerState, HTTPRequest, Principal], Awaitable[Any]]) -> Handler:
        async def route(request: HTTPRequest) -> HTTPResponse:
            state = _state(request)
            try:
                who = await caller(state, request.headers.get("authorization"), admin_only)
                result = await fn(state, request, who)
                return result if isinstance(result, HTTPResponse) else json_response(result)
            except Exception as exc:
                error = to_http(exc) or _bad_value(exc)
                if error is None:
                    log.exception("unexpected error in %s", request.url.path)
                    error = INTERNAL
                return error_response(error)

        route.__name__ = fn.__name__
        route.__doc__ = fn.__doc__
        return route

    return wrap


def _bad_value(exc: Exception) -> Any:
    if isinstance(exc, ValueError):
        return to_http(RequestError(str(exc)))
    return None


# --------------------------------------------------------------------------- health, limits


@handled(admin_only=True)
async def health(state: ServerState, request: HTTPRequest, who: Principal) -> dict[str, Any]:
    """Provider health with reasons, plus breaker, traffic and key figures per provider."""
    engine: Any = state.engine
    report: dict[str, Any] = await engine.health(detail=True)
    stats = await aggregate.engine_stats(state)  # every worker's under --workers
    breakers = stats.get("breakers", {})
    traffic = stats.get("providers", {})
    for pid, view in report["providers"].items():
        view["breaker"] = breakers.get(pid, "closed")
        view["latency_p95_ms"] = (traffic.get(pid) or {}).get("latency_p95_ms")
        keys = (await engine.arate_limit_status(pid)).get("keys", {})
        view["keys"] = len(keys)
        view["keys_usable"] = sum(1 for k in keys.values() if not k.get("blocked_for_s"))
    report["models"] = {
        mid: {"breaker": breakers.get(mid, "closed"), **_model_traffic(view)}
        for mid, view in stats.get("models", {}).items()
    }
    return report


def _model_traffic(view: dict[str, Any]) -> dict[str, Any]:
    keep = ("requests", "error_rate", "latency_p50_ms", "latency_p95_ms", "cost_usd")
    return {k: view.get(k) for k in keep}


@handled(admin_only=True)
async def limits(state: ServerState, request: HTTPRequest, who: Principal) -> dict[str, Any]:
    """Rate-limit headroom per provider and key (key labels, never keys)."""
    engine: Any = state.engine
    now = time.time()
    # Windows and in-flight counts are in the shared store; each worker queues its own
    # waiters, so under --workers the queues are every worker's added up.
    live = await aggregate.live_state(state)
    queued: dict[str, int] | None = live.get("rate_limit_queued") if live else None
    out: dict[str, Any] = {}
    for pid in sorted(state.engine.plan.providers):
        status = await engine.arate_limit_status(pid)
        keys = {}
        for key_id, view in status.get("keys", {}).items():
            blocked = float(view.get("blocked_for_s") or 0.0)
            keys[key_id] = {**view, "blocked_until": now + blocked if blocked else None}
        waiting = status.get("queued", 0) if queued is None else queued.get(pid, 0)
        out[pid] = {"queued": waiting, "keys": keys}
    return {"providers": out, "budgets": {**budget_limits(state), "keys": await key_views(state)}}


def budget_limits(state: ServerState) -> dict[str, Any]:
    """The tightest daily and monthly workspace budget any route sets."""
    daily: list[float] = []
    monthly: list[float] = []
    for route in _routes(state.engine.plan):
        if route.budget.daily_usd is not None:
            daily.append(route.budget.daily_usd)
        if route.budget.monthly_usd is not None:
            monthly.append(route.budget.monthly_usd)
    wallets = state.engine.plan.wallets
    named = {name: _caps(w) for name, w in wallets.named.items()}
    if wallets.others.bucket is not None:  # the "*" pool of every workspace not listed
        named[wallets.others.bucket] = _caps(wallets.others)
    return {
        "workspace_daily_usd": min(daily, default=None),
        "workspace_monthly_usd": min(monthly, default=None),
        "workspaces": named,
    }


def _caps(wallet: Any) -> dict[str, float | None]:
    return {"daily_usd": wallet.daily_usd, "monthly_usd": wallet.monthly_usd}


def _routes(plan: Any) -> list[Any]:
    """Every RoutePlan reachable from the plan's decision trees (read defensively)."""
    found = []
    for tree in plan.policies.values():
        for target in (getattr(tree, "default", tree), *(r.target for r in tree.rules)):
            route = getattr(target, "route", target)
            if hasattr(route, "budget"):
                found.append(route)
    return found


# --------------------------------------------------------------------------- costs


def window(params: dict[str, str], now: float) -> tuple[float, float | None, str]:
    """`[since, until)` and a label from period / days / since+until (one way at a time)."""
    if "days" in params:
        days = _int(params["days"], "days")
        return day_start(now) - (days - 1) * 86400, None, f"last {days} days"
    if "since" in params or "until" in params:
        since = parse_time(params.get("since", "0"), "since")
        until = parse_time(params["until"], "until") if "until" in params else None
        return since, until, "range"
    period = params.get("period", "month")
    if period not in ("day", "month"):
        raise RequestError(f"period must be 'day' or 'month', got {period!r}")
    return (day_start(now) if period == "day" else month_start(now)), None, period


def parse_time(text: str, name: str) -> float:
    """A UTC date (YYYY-MM-DD, the day's start) or a Unix time in seconds."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise RequestError(f"{name} must be YYYY-MM-DD or a Unix time, got {text!r}") from None
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()


def _int(text: str, name: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 3660:
        raise RequestError(f"{name} must be a whole number from 1 to 3660, got {text!r}")
    return int(text)


def spend_reader(ledger_url: str | None, config_dir: Path) -> SpendReader:
    """The reports over the configured ledger: Postgres when `ledger_url` names it (every
    replica's calls), else this host's SQLite file."""
    if ledger_url and ledger_url.startswith(POSTGRES_SCHEMES):
        from engine.state.postgres_spend import PostgresSpendReport  # see state/backends.py

        return PostgresSpendReport(ledger_url)
    return LocalSpend(default_ledger_path(config_dir))


def spend_report(state: ServerState) -> SpendReader:
    report: SpendReader = state.extras["spend"]
    return report


@handled(admin_only=True)
async def costs(state: ServerState, request: HTTPRequest, who: Principal) -> dict[str, Any]:
    """Totals from the ledger for a window, grouped by one dimension."""
    params = dict(request.query_params)
    by = params.get("by", "model")
    if by not in DIMENSIONS:
        raise RequestError(f"by must be one of {', '.join(DIMENSIONS)}, got {by!r}")
    workspace = who.workspace or params.get("workspace") or None
    since, until, label = window(params, time.time())
    await flush(state)
    rows = await spend_report(state).totals(by, since, until, workspace)
    total = sum(r["cost_usd"] for r in rows)
    return {
        "workspace": workspace,
        "window": label,
        "since": since,
        "until": until,
        "by": by,
        "rows": rows,
        "total_cost_usd": total,
        "total_attempts": sum(r["attempts"] for r in rows),
    }


async def flush(state: ServerState) -> None:
    """What has been recorded reaches the file before it is read (the writer batches)."""
    flush = getattr(state.engine, "flush_ledger", None)
    if flush is not None:
        await flush()


# --------------------------------------------------------------------------- explain, usage


@handled(admin_only=False)
async def explain(state: ServerState, request: HTTPRequest, who: Principal) -> Any:
    """Where a chat request would go and why, with live state; nothing is sent."""
    data = decode_json(await request.body())
    policy = request.headers.get(POLICY_HEADER) or None
    merge_metadata(data, request.headers, who)
    state.auth.authorize(who, policy or data.get("model") or state.engine.plan.default_policy)
    engine: Any = state.engine
    return engine.explain(parse_request(data), policy)


@handled(admin_only=False)
async def usage(state: ServerState, request: HTTPRequest, who: Principal) -> Any:
    """Record one call made outside the engine; priced from the plan."""
    data = decode_json(await request.body())
    if who.workspace is not None:
        data["workspace"] = who.workspace
    call = ExternalCall.parse(data)
    if who is not ADMIN and who is not ANONYMOUS:
        call = _with_client(call, who.key_id)
    engine: Any = state.engine
    recorded = await engine.arecord(call)
    await state.auth.book(who, recorded.get("cost_usd"))
    return recorded


def _with_client(call: ExternalCall, client: str) -> ExternalCall:
    return dataclasses.replace(call, client=client)


def routes() -> list[Route]:
    """The ops routes, for create_app."""
    return [
        Route("/v1/health", health, methods=["GET"]),
        Route("/v1/limits", limits, methods=["GET"]),
        Route("/v1/costs", costs, methods=["GET"]),
        Route("/v1/explain", explain, methods=["POST"]),
        Route("/v1/usage", usage, methods=["POST"]),
    ]

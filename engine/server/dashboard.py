"""The dashboard: one static page at /dashboard and the JSON it draws, GET /v1/dashboard.

No build step and no network: the page, its script and the chart library (Chart.js, MIT,
vendored with its licence under static/) ship inside the package. The page holds no data;
it fetches /v1/dashboard (auth like the other ops routes: the key is taken from the URL's
`#key=...` fragment, which never leaves the browser, or asked for) and redraws every
`refresh` seconds (default 10).

The JSON, for the last `hours` (default 24) in `bucket`s (minute, hour, day; default hour):
spend over time by model, provider, workspace and client key (from the ledger); requests,
error rate, latency p50/p95, breaker and health per provider (live stats); every breaker
that is not closed; recent failovers (ledger); budget burn per workspace against the
tightest route budget, and per key against its own.
"""

from __future__ import annotations

import time
from importlib import resources
from typing import Any

from starlette.requests import Request as HTTPRequest
from starlette.responses import Response as HTTPResponse
from starlette.routing import Route

from engine.errors import RequestError
from engine.server import aggregate, ops
from engine.server.auth import Principal
from engine.server.client_keys import key_views
from engine.server.common import ServerState, error_response
from engine.server.errors import HTTPError
from engine.state.money import month_start

SERIES = ("model", "provider", "workspace", "key")
#: What /dashboard/<name> may serve, and as what.
STATIC = {
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
    "chart.umd.min.js": "text/javascript",
    "LICENSE.chartjs.md": "text/plain",
}


def _static(name: str) -> bytes:
    return resources.files("engine.server").joinpath("static", name).read_bytes()


async def page(request: HTTPRequest) -> HTTPResponse:
    """The page itself (no data in it, so no auth)."""
    return HTTPResponse(_static("dashboard.html"), media_type="text/html; charset=utf-8")


async def asset(request: HTTPRequest) -> HTTPResponse:
    name = request.path_params["name"]
    kind = STATIC.get(name)
    if kind is None:
        return error_response(HTTPError(404, "no such file", "invalid_request_error", "not_found"))
    headers = {"cache-control": "max-age=3600"}
    return HTTPResponse(_static(name), media_type=kind, headers=headers)


@ops.handled(admin_only=True)
async def data(state: ServerState, request: HTTPRequest, who: Principal) -> dict[str, Any]:
    """Everything the page draws, in one answer."""
    params = request.query_params
    hours = _number(params.get("hours", "24"), "hours", 1, 24 * 90)
    bucket = params.get("bucket") or ("minute" if hours <= 2 else "hour" if hours <= 72 else "day")
    now = time.time()
    since = now - hours * 3600
    workspace = who.workspace
    await ops.flush(state)
    report = ops.spend_report(state)
    spend = {
        by: _pivot(await report.series(by, since, None, workspace, bucket), by) for by in SERIES
    }
    totals = await report.totals("provider", since, None, workspace)
    return {
        "generated": now,
        "window": {"hours": hours, "bucket": bucket, "since": since},
        "workspace": workspace,
        "spend": spend,
        "total_cost_usd": sum(r["cost_usd"] for r in totals),
        "total_attempts": sum(r["attempts"] for r in totals),
        "providers": await _providers(state),
        "breakers": await _open_breakers(state),
        "failovers": await report.failovers(since, 20),
        "budgets": await _budgets(
            state, await report.totals("workspace", month_start(now), None, workspace)
        ),
    }


def _number(text: str, name: str, low: float, high: float) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not low <= value <= high:
        raise RequestError(f"{name} must be a number from {low:g} to {high:g}, got {text!r}")
    return value


def _pivot(rows: list[dict[str, Any]], by: str) -> dict[str, Any]:
    """Series rows -> {"t": [bucket starts], "series": {value: [cost per bucket]}}."""
    times = sorted({r["t"] for r in rows})
    index = {t: i for i, t in enumerate(times)}
    series: dict[str, list[float]] = {}
    for r in rows:
        series.setdefault(str(r[by]), [0.0] * len(times))[index[r["t"]]] += r["cost_usd"]
    return {"t": times, "series": series}


async def _providers(state: ServerState) -> dict[str, Any]:
    engine: Any = state.engine
    health = await engine.health(detail=True)
    stats = await aggregate.engine_stats(state)  # every worker's under --workers
    traffic = stats.get("providers", {})
    breakers = stats.get("breakers", {})
    out = {}
    for pid, view in health["providers"].items():
        seen = traffic.get(pid) or {}
        out[pid] = {
            "status": view["status"],
            "reason": view.get("reason"),
            "breaker": breakers.get(pid, "closed"),
            "requests": seen.get("requests", 0),
            "failures": seen.get("failures", 0),
            "error_rate": seen.get("error_rate", 0.0),
            "latency_p50_ms": seen.get("latency_p50_ms"),
            "latency_p95_ms": seen.get("latency_p95_ms"),
            "cost_usd": seen.get("cost_usd", 0.0),
        }
    return out


async def _open_breakers(state: ServerState) -> dict[str, str]:
    stats = await aggregate.engine_stats(state)  # the most open state any worker has
    return {k: v for k, v in (stats.get("breakers") or {}).items() if v != "closed"}


async def _budgets(state: ServerState, month_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per workspace spent today / this month against its workspace budget (a name in the
    `"*"` pool shows the pool's spend and caps); per key."""
    engine: Any = state.engine
    workspaces = {}
    for row in month_rows:
        name = str(row["workspace"])
        spent = await engine.aspent(name)
        wallet = engine.plan.wallets.of(name)
        workspaces[name] = {
            "day_usd": spent.get("day", 0.0),
            "month_usd": spent.get("month", 0.0),
            "daily_limit_usd": wallet.daily_usd,
            "monthly_limit_usd": wallet.monthly_usd,
        }
    keys = {
        key_id: {**view, "spent_usd": view["spent"].get("total", 0.0)}
        for key_id, view in (await key_views(state)).items()
        if view["budget_usd"] is not None
    }
    return {"workspaces": workspaces, "keys": keys}


def routes() -> list[Route]:
    """The dashboard's routes, for create_app."""
    return [
        Route("/dashboard", page, methods=["GET"]),
        Route("/dashboard/{name}", asset, methods=["GET"]),
        Route("/v1/dashboard", data, methods=["GET"]),
    ]

"""The OpenAI-compatible HTTP app: translates HTTP to engine calls and back, nothing more.

Routes: POST /v1/chat/completions, /v1/messages, /v1/responses, /v1/completions (JSON or
SSE), /v1/embeddings, GET /v1/models, /v1/stats, /healthz, /readyz, /metrics. Starlette on
uvicorn (uvloop + httptools) was chosen by measurement (bench/proxy.py): within noise of a
raw ASGI pass-through, well ahead of plain asyncio/h11. The hot routes, the four chat-call
APIs, are one raw ASGI app each (`SurfaceRoute`, server/surface.py) that `EngineApp` calls
before starlette's middleware and router, which cost as much CPU per call as the route's
own work; every other route, and every other method on those paths, is plain starlette.

Routing inputs from HTTP: `model` is a policy name or a `provider/name` id; the
`x-engine-policy` header names a policy explicitly; `x-engine-workspace`,
`x-engine-task-type` and `x-engine-tags` fill `metadata` (the body's own `metadata` wins,
and a workspace bound to the API key wins over both). Response headers report which
provider and model answered, attempts, cost and cache hits.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request as HTTPRequest
from starlette.responses import Response as HTTPResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from engine.server import admin, aggregate, dashboard, ops, plugins, status, tracing
from engine.server.access import AccessLog, RequestIds
from engine.server.client_keys import authenticator, close_keys, watch_keys
from engine.server.common import RoutingEngine, ServerState, error_response
from engine.server.embeddings import EMBEDDINGS_PATH, embeddings
from engine.server.errors import INTERNAL, HTTPError, ServerError, to_http
from engine.server.metrics import ServerMetrics
from engine.server.model_info import MODEL_PATH, retrieve_model
from engine.server.reload import ConfigWatcher
from engine.server.settings import ServerSettings
from engine.server.surface import SurfaceRoute, surface_routes
from engine.server.workers import Workers

# --------------------------------------------------------------------------- app


async def _server_error(request: HTTPRequest, exc: Exception) -> HTTPResponse:
    error = to_http(exc)
    return error_response(error or INTERNAL)


async def _http_error(request: HTTPRequest, exc: Exception) -> HTTPResponse:
    assert isinstance(exc, HTTPException)
    code = (
        "not_found"
        if exc.status_code == 404
        else "method_not_allowed"
        if exc.status_code == 405
        else None
    )
    return error_response(
        HTTPError(exc.status_code, str(exc.detail), "invalid_request_error", code)
    )


class EngineApp(Starlette):
    """Starlette, with a POST to an API surface's path sent straight to its raw ASGI route.

    The check is three dict lookups; every other path, method and scope type (lifespan
    included) goes through starlette as before, behind `RequestIds` (the surfaces send
    their own x-request-id). With access logging on, every HTTP request passes `AccessLog`
    first.
    """

    def __init__(
        self,
        surfaces: Mapping[str, SurfaceRoute],
        access_log: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        #: POST paths served by bare ASGI routes (chat and the other API surfaces).
        self.fast: dict[str, Any] = dict(surfaces)
        self.routed = RequestIds(super().__call__)
        self.access = AccessLog(self._dispatch, access_log)
        # tracing.attach wraps it when OTLP is configured
        self.entry: ASGIApp = self.access if access_log else self._dispatch

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.entry(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "POST":
            route = self.fast.get(scope["path"])
            if route is not None:
                await route(scope, receive, send)
                return
        await self.routed(scope, receive, send)


def create_app(
    engine: RoutingEngine,
    settings: ServerSettings,
    watcher: ConfigWatcher | None = None,
    workers_dir: Path | None = None,
) -> Starlette:
    """The ASGI app over one engine; the watcher (if any) runs while the app is up.
    `workers_dir`: the directory one server's workers share (runner.serve), which makes
    /metrics and /v1/stats speak for all of them (server/aggregate.py)."""
    live = aggregate.live_reader(engine, watcher)
    state = ServerState(
        engine,
        settings,
        authenticator(engine, settings),
        ServerMetrics(live, multiprocess_dir=workers_dir),
        watcher,
    )
    workers = None
    if workers_dir is not None:
        workers = Workers(workers_dir, lambda: aggregate.worker_snapshot(state, live))
        state.extras["workers"] = workers

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        import asyncio

        task = asyncio.create_task(watcher.run()) if watcher and settings.reload else None
        keys = watch_keys(state) if settings.reload else None  # server.yaml's api_keys
        warming = (
            asyncio.create_task(_warm(engine, settings.keep_alive_s))
            if settings.warm_on_start or settings.keep_alive_s
            else None
        )
        if workers is not None:
            await workers.start()
        try:
            yield
        finally:
            if workers is not None:
                await workers.aclose()
            for background in (task, warming, keys):
                if background is not None:
                    background.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await background
            await engine.aclose()  # flushes the ledger
            await close_keys(state.auth)
            await ops.spend_report(state).aclose()

    plugins.install(engine, plugins.load_plugins(settings.plugins))
    surfaces = surface_routes(state)
    app = EngineApp(
        surfaces,
        settings.access_log,
        routes=[
            *(Route(path, route, methods=["POST"]) for path, route in surfaces.items()),
            Route("/v1/models", status.list_models, methods=["GET"]),
            Route(MODEL_PATH, retrieve_model, methods=["GET"]),
            Route(EMBEDDINGS_PATH, embeddings, methods=["POST"]),
            Route("/v1/stats", status.stats, methods=["GET"]),
            Route("/healthz", status.healthz, methods=["GET"]),
            Route("/readyz", status.readyz, methods=["GET"]),
            Route("/metrics", status.metrics, methods=["GET"]),
            *ops.routes(),
            *admin.routes(),
            *dashboard.routes(),
        ],
        exception_handlers={ServerError: _server_error, HTTPException: _http_error},
        lifespan=lifespan,
    )
    app.state.server = state
    tracing.attach(app, engine)
    state.extras["spend"] = ops.spend_reader(settings.ledger_url, settings.config_dir)
    return app


async def _warm(engine: RoutingEngine, keep_alive_s: float | None) -> None:
    """Open provider connections in the background (start-up is not held up by a slow one);
    the engine keeps them warm every `keep_alive_s` when set."""
    warm = getattr(engine, "warm", None)
    if warm is not None:
        await warm(keep_alive_s=keep_alive_s)

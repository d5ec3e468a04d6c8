"""The OpenAI-compatible HTTP app: translates HTTP to engine calls and back, nothing more.

Routes: POST /v1/chat/completions (JSON or SSE), GET /v1/models, /v1/stats, /healthz,
/readyz, /metrics. Starlette on uvicorn (uvloop + httptools) was chosen by measurement
(bench/proxy.py): within noise of a raw ASGI pass-through, well ahead of plain asyncio/h11.
The chat route, the only hot one, is a raw ASGI app (`ChatRoute`) that `EngineApp` calls
before starlette's middleware and router, which cost as much CPU per call as the route's
own work; every other route, and every other method on that path, is plain starlette.

Routing inputs from HTTP: `model` is a policy name or a `provider/name` id; the
`x-engine-policy` header names a policy explicitly; `x-engine-workspace`,
`x-engine-task-type` and `x-engine-tags` fill `metadata` (the body's own `metadata` wins,
and a workspace bound to the API key wins over both). Response headers report which
provider and model answered, attempts, cost and cache hits.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request as HTTPRequest
from starlette.responses import Response as HTTPResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from engine.messages import Request, parse_request
from engine.result import Response
from engine.server import admin, aggregate, dashboard, ops, plugins, status, tracing
from engine.server.access import AccessLog
from engine.server.auth import Principal
from engine.server.client_keys import authenticator, close_keys, watch_keys
from engine.server.common import (
    POLICY_HEADER,
    RoutingEngine,
    ServerState,
    decode_json,
    error_response,
    merge_metadata,
)
from engine.server.embeddings import EMBEDDINGS_PATH, embeddings
from engine.server.errors import INTERNAL, HTTPError, ServerError, to_http
from engine.server.exchange import (
    DROPPED_HEADER,
    JSONAnswer,
    StreamTracker,
    as_function_call,
    dropped_header,
    meta_headers,
    raw_headers,
    read_body,
    response_headers,
    routing_target,
    wanted_headers,
)
from engine.server.metrics import ServerMetrics, policy_label
from engine.server.model_info import MODEL_PATH, retrieve_model
from engine.server.reload import ConfigWatcher
from engine.server.settings import ServerSettings
from engine.server.sse import SSE_HEADERS, ChunkEncoder, EventStreamResponse, aclose_events
from engine.server.surface import SurfaceRoute, surface_routes
from engine.server.workers import Workers
from engine.state.key_limits import Ticket

log = logging.getLogger("engine.server")


# --------------------------------------------------------------------------- helpers


def _state(request: HTTPRequest) -> ServerState:
    state: ServerState = request.app.state.server
    return state


# --------------------------------------------------------------------------- chat

CHAT_PATH = "/v1/chat/completions"


class ChatRoute:
    """POST /v1/chat/completions as a bare ASGI app.

    `EngineApp` hands this path here before starlette's middleware, router and
    Request/Response objects, which cost about as much CPU per call as the route's own
    work; starlette's router also points here (and answers 405 for other methods), so
    either way there is one implementation. Nothing here needs what starlette adds:
    every failure becomes an OpenAI error body inside `chat_completions`, and anything
    unexpected propagates to the server, which logs it and answers a bare 500 as
    starlette's ServerErrorMiddleware did.
    """

    def __init__(self, state: ServerState) -> None:
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await chat_completions(self.state, scope, receive)
        await response(scope, receive, send)


async def chat_completions(
    state: ServerState, scope: Scope, receive: Receive
) -> JSONAnswer | EventStreamResponse:
    started = time.perf_counter()
    headers = wanted_headers(scope)
    policy_hint = headers.get(POLICY_HEADER) or None
    stream, ticket = False, None
    try:
        who = await state.auth.authenticate(headers.get("authorization"))
        limit = state.settings.max_body_bytes
        data = decode_json(await read_body(receive, headers.get("content-length"), limit))
        state.auth.authorize(who, routing_target(data, policy_hint, state.engine.plan))
        merge_metadata(data, headers, who)
        req = parse_request(data)
        stream = req.stream
        ticket = await state.auth.admit(who, req)  # the key's rpm / tpm / concurrency
        if stream:
            legacy = "functions" in data
            return await _stream(state, req, policy_hint, who, started, legacy, ticket)
        resp = await state.engine.arun(req, policy=policy_hint)
    except Exception as exc:
        state.auth.done(ticket)
        return _failed(state, exc, policy_hint, started, stream=stream)
    state.auth.done(ticket, resp.usage)
    return _answer(state, resp, who, started, req, "functions" in data)


def _answer(
    state: ServerState,
    resp: Response,
    who: Principal,
    started: float,
    req: Request,
    legacy: bool = False,
) -> JSONAnswer:
    body = resp.to_openai()
    if not body["id"]:
        body["id"] = f"chatcmpl-{int(started * 1e9):x}"
    if legacy:
        as_function_call(body)
    state.metrics.observe(
        policy=resp.policy, provider=resp.provider, model=resp.model, status=200, stream=False,
        seconds=time.perf_counter() - started, input_tokens=resp.usage.input_tokens,
        output_tokens=resp.usage.output_tokens, cost_usd=resp.cost_usd, attempts=resp.attempts,
        cached=resp.cached,
    )  # fmt: skip
    headers = response_headers(
        resp.provider,
        resp.model,
        len(resp.attempts),
        resp.cost_usd,
        resp.cached,
        resp.policy,
        None if resp.cached else resp.cost_breakdown,
    )
    if resp.metadata:
        headers.update(meta_headers(resp.metadata))
    dropped = dropped_header(state.engine.plan, req, resp.provider, resp.model)
    if dropped:
        headers[DROPPED_HEADER] = dropped
    return JSONAnswer(orjson.dumps(body), 200, raw_headers(headers))


def _failed(
    state: ServerState, exc: Exception, policy: str | None, started: float, stream: bool
) -> JSONAnswer:
    error = to_http(exc)
    if error is None:
        log.exception("unexpected error while serving a chat request")
        error = INTERNAL
    elif error.status >= 500:
        log.warning("chat request failed: %s", error.message)
    attempts = tuple(getattr(exc, "attempts", ()))
    state.metrics.observe(
        policy=policy_label(policy, state.engine.plan.policies), provider="", model="",
        status=error.status, stream=stream,
        seconds=time.perf_counter() - started, attempts=attempts,
    )  # fmt: skip
    headers = raw_headers(error.headers())
    if attempts:
        headers.append((b"x-engine-attempts", str(len(attempts)).encode()))
    return JSONAnswer(orjson.dumps(error.body()), error.status, headers)


async def _stream(
    state: ServerState,
    req: Request,
    policy: str | None,
    who: Principal,
    started: float,
    legacy: bool = False,
    ticket: Ticket | None = None,
) -> EventStreamResponse:
    """Wait for the first event (so failover before it is invisible and errors get a status)."""
    events = state.engine.astream(req, policy=policy)
    try:
        first = await anext(aiter(events))
    except BaseException:
        with contextlib.suppress(Exception):
            await aclose_events(events)
        raise
    ttft = time.perf_counter() - started
    tracker = StreamTracker(state, who, first, started, ttft, ticket)
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    headers = {
        **SSE_HEADERS,
        **response_headers(
            first.provider, first.model, len(first.attempts), None, first.cached, first.policy
        ),
    }
    dropped = dropped_header(state.engine.plan, req, first.provider, first.model)
    if dropped:
        headers[DROPPED_HEADER] = dropped
    return EventStreamResponse(
        first, events, ChunkEncoder(include_usage, legacy), headers, tracker.see, tracker.end
    )


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
    """Starlette, with POST /v1/chat/completions sent straight to its raw ASGI route.

    The check is three dict lookups; every other path, method and scope type (lifespan
    included) goes through starlette as before. Every HTTP request passes `AccessLog` first
    (request id, JSON access log).
    """

    def __init__(
        self,
        chat: ChatRoute,
        access_log: bool = False,
        surfaces: Mapping[str, SurfaceRoute] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.chat = chat
        #: POST paths served by bare ASGI routes (chat and the other API surfaces).
        self.fast: dict[str, Any] = {CHAT_PATH: chat, **(surfaces or {})}
        self.access = AccessLog(self._dispatch, access_log)
        self.entry: ASGIApp = self.access  # tracing.attach wraps it when OTLP is configured

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
        await super().__call__(scope, receive, send)


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
    chat = ChatRoute(state)
    surfaces = surface_routes(state)
    app = EngineApp(
        chat,
        settings.access_log,
        surfaces,
        routes=[
            Route(CHAT_PATH, chat, methods=["POST"]),
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

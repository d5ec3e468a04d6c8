"""Request ids and structured access logs.

Every HTTP answer carries `x-request-id`: the client's own when it sent a sane one (so a
caller's id follows the request through our logs), else a fresh random one. The API
surfaces (server/surface.py) put it in the header list they build anyway; every other route
gets it from `RequestIds`, an ASGI wrapper around starlette. With `access_log` on, each
request also leaves one JSON line on the `engine.access` logger (stderr): time, request id,
method, path, status, duration, client address, and the routing facts the chat route put
in its headers (provider, model, policy, attempts, cost), plus the trace id when tracing is
on. Nothing from the body or the Authorization header is logged.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("engine.access")

REQUEST_ID_HEADER = b"x-request-id"
#: Fresh ids: 24 hex digits, a random per-process prefix (the high 48 bits) and a counter
#: (unique, and no syscall per request).
_COUNTER = itertools.count(int.from_bytes(os.urandom(6), "big") << 48)
_SANE = re.compile(rb"[A-Za-z0-9._:/+=-]{1,128}")
_LOGGED = {
    b"x-engine-provider": "provider",
    b"x-engine-model": "model",
    b"x-engine-policy": "policy",
    b"x-engine-attempts": "attempts",
    b"x-engine-cost-usd": "cost_usd",
    b"x-engine-cache": "cache",
    REQUEST_ID_HEADER: "request_id",
}


def incoming_id(scope: Scope) -> bytes:
    """The client's x-request-id if it is a plain token of sane length, else a new one."""
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER and _SANE.fullmatch(value):
            return bytes(value)
    return new_id()


def new_id() -> bytes:
    """A fresh request id (what `incoming_id` gives a request that sent none)."""
    return b"%024x" % next(_COUNTER)


class RequestIds:
    """Wraps an ASGI app (starlette's routes): the request id on every answer it sends."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        rid = incoming_id(scope)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {
                    **message,
                    "headers": [*message.get("headers", ()), (REQUEST_ID_HEADER, rid)],
                }
            await send(message)

        await self.app(scope, receive, send_with_id)


class AccessLog:
    """Wraps an ASGI app (installed only when access logging is on): one JSON log line per
    HTTP request, its request id read from the answer's x-request-id header."""

    def __init__(
        self, app: ASGIApp, enabled: bool, trace_id: Callable[[], str | None] | None = None
    ) -> None:
        self.app = app
        self.enabled = enabled
        self.trace_id = trace_id
        if enabled:
            configure_logger()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        seen: list[Message] = []

        async def send_seen(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen.append(message)
            await send(message)

        started = time.perf_counter()
        trace = self.trace_id() if self.trace_id is not None else None
        try:
            await self.app(scope, receive, send_seen)
        finally:
            self._log(scope, seen[0] if seen else None, started, trace)

    def _log(self, scope: Scope, start: Message | None, started: float, trace: str | None) -> None:
        entry: dict[str, Any] = {
            "ts": round(time.time(), 3),
            "request_id": "",
            "method": scope["method"],
            "path": scope["path"],
            "status": start["status"] if start else 500,
            "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            "client": (scope.get("client") or ("", 0))[0],
        }
        if trace:
            entry["trace_id"] = trace
        for name, value in start.get("headers", ()) if start else ():
            field = _LOGGED.get(name)
            if field is not None:
                entry[field] = value.decode("latin-1")
        if not entry["request_id"]:  # the app failed before answering: the client's id
            entry["request_id"] = incoming_id(scope).decode("latin-1")
        log.info(orjson.dumps(entry).decode())


def configure_logger() -> None:
    """`engine.access` writes bare JSON lines to stderr, whatever the root format is."""
    if getattr(log, "_engine_configured", False):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    log._engine_configured = True  # type: ignore[attr-defined]

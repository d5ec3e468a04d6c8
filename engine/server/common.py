"""What the server's route modules share: the per-app state, JSON answers, request parsing.

app.py (chat), ops.py, dashboard.py and the API-surface modules all import from here, so
none of them imports another and create_app can register them all without a cycle.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from starlette.responses import Response as HTTPResponse

from engine.embedding import EmbeddingRequest, EmbeddingResponse
from engine.messages import Request
from engine.plan.compiled import Plan
from engine.result import Response, StreamEvent
from engine.server.auth import ANONYMOUS, Authenticator, Principal
from engine.server.errors import HTTPError, ServerError
from engine.server.metrics import ServerMetrics
from engine.server.reload import ConfigWatcher
from engine.server.settings import ServerSettings

POLICY_HEADER = "x-engine-policy"
META_HEADERS = {
    "x-engine-workspace": "workspace",
    "x-engine-task-type": "task_type",
    "x-engine-tags": "tags",
}


class RoutingEngine(Protocol):
    """What the server needs from `engine.Engine` (kept narrow so tests can pass a double)."""

    @property
    def plan(self) -> Plan: ...

    async def arun(self, request: Request, policy: str | None = None) -> Response: ...

    async def aembed(
        self, request: EmbeddingRequest, policy: str | None = None
    ) -> EmbeddingResponse: ...

    def astream(
        self, request: Request, policy: str | None = None
    ) -> AsyncIterator[StreamEvent]: ...

    def stats(self, *, samples: bool = False) -> Any: ...

    def reload(self, plan: Plan) -> object: ...

    async def aclose(self) -> None: ...


@dataclass
class ServerState:
    """Everything a request handler reaches for, built once per app."""

    engine: RoutingEngine
    settings: ServerSettings
    auth: Authenticator
    metrics: ServerMetrics
    watcher: ConfigWatcher | None = None
    started: float = field(default_factory=time.time)
    extras: dict[str, Any] = field(default_factory=dict)  # what route modules keep per app


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> HTTPResponse:
    return HTTPResponse(
        orjson.dumps(data), status, headers=dict(headers or {}), media_type="application/json"
    )


def error_response(error: HTTPError) -> HTTPResponse:
    return json_response(error.body(), error.status, error.headers())


def decode_json(body: bytes) -> dict[str, Any]:
    if not body:
        raise ServerError(
            400,
            "request body is empty; send a JSON object",
            "invalid_request_error",
            "invalid_json",
        )
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ServerError(
            400, f"malformed JSON: {exc}", "invalid_request_error", "invalid_json"
        ) from None
    if not isinstance(data, dict):
        raise ServerError(
            400,
            f"request body must be a JSON object, got {type(data).__name__}",
            "invalid_request_error",
            "invalid_json",
        )
    return data


def merge_metadata(data: dict[str, Any], headers: Mapping[str, str], who: Principal) -> None:
    """Fill body `metadata` from x-engine-* headers; the key's workspace overrides both."""
    meta = data.get("metadata")
    if meta is None and who is ANONYMOUS and META_HEADERS.keys().isdisjoint(headers):
        return  # the usual call: nothing to merge (~3k instructions less than the loop)
    if meta is not None and not isinstance(meta, dict):
        return  # parse_request names the type error precisely
    merged: dict[str, Any] = {}
    for header, key in META_HEADERS.items():
        value = headers.get(header)
        if value:
            merged[key] = (
                [t.strip() for t in value.split(",") if t.strip()] if key == "tags" else value
            )
    merged.update(meta or {})
    if who.workspace is not None:
        merged["workspace"] = who.workspace
    if who.key_id != "anonymous":  # the ledger's `client`: which key made the call
        merged["client"] = who.key_id
    if merged:
        data["metadata"] = merged

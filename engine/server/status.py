"""The small status routes: GET /v1/models, /v1/stats, /healthz, /readyz and /metrics.

`/v1/stats` and `/metrics` speak for every worker of `serve --workers N` (aggregate.py).
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request as HTTPRequest
from starlette.responses import Response as HTTPResponse

from engine.server import aggregate
from engine.server.common import ServerState, json_response
from engine.server.metrics import CONTENT_TYPE


def _state(request: HTTPRequest) -> ServerState:
    state: ServerState = request.app.state.server
    return state


async def list_models(request: HTTPRequest) -> HTTPResponse:
    state = _state(request)
    await state.auth.authenticate(request.headers.get("authorization"))
    plan = state.engine.plan
    created = int(state.started)
    data: list[dict[str, Any]] = [
        {"id": name, "object": "model", "created": created, "owned_by": "engine", "kind": "policy"}
        for name in sorted(plan.policies)
    ]
    for model_id, model in sorted(plan.models.items()):
        provider = plan.providers.get(model.provider)
        data.append(
            {
                "id": model_id, "object": "model", "created": created, "owned_by": model.provider,
                "kind": "model", "enabled": bool(provider and provider.enabled),
            }
        )  # fmt: skip
    return json_response({"object": "list", "data": data})


async def stats(request: HTTPRequest) -> HTTPResponse:
    state = _state(request)
    await state.auth.authenticate(request.headers.get("authorization"))
    payload = await aggregate.stats_payload(state)
    return HTTPResponse(
        orjson.dumps(payload, default=_jsonable, option=orjson.OPT_NON_STR_KEYS),
        media_type="application/json",
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if hasattr(value, "as_dict"):
        return value.as_dict()
    return str(value)


async def healthz(request: HTTPRequest) -> HTTPResponse:
    return json_response({"status": "ok"})


async def readyz(request: HTTPRequest) -> HTTPResponse:
    plan = _state(request).engine.plan
    enabled = sorted(p.id for p in plan.providers.values() if p.enabled)
    body = {
        "status": "ready" if enabled else "no provider enabled",
        "providers": enabled,
        "policies": len(plan.policies),
    }
    return json_response(body, 200 if enabled else 503)


async def metrics(request: HTTPRequest) -> HTTPResponse:
    state = _state(request)
    live = await aggregate.live_state(state) if aggregate.workers_of(state) else None
    return HTTPResponse(state.metrics.render(live), media_type=CONTENT_TYPE)

"""GET /v1/models/{id}: one policy or registry model, as OpenAI's `model` object.

The id may hold slashes (`openai/gpt-4o`, `together/meta-llama/...`), so the route takes
the rest of the path. An id the plan does not know is a 404 in OpenAI's error shape.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request as HTTPRequest
from starlette.responses import Response as HTTPResponse

from engine.server.common import ServerState, json_response
from engine.server.errors import ServerError

__all__ = ["MODEL_PATH", "retrieve_model"]

MODEL_PATH = "/v1/models/{model_id:path}"


def describe(state: ServerState, model_id: str) -> dict[str, Any]:
    """The `model` object for a policy name or a `provider/name` id (404 if unknown)."""
    plan = state.engine.plan
    created = int(state.started)
    if model_id in plan.policies:
        return {"id": model_id, "object": "model", "created": created, "owned_by": "engine"}
    model = plan.models.get(model_id)
    if model is None:
        raise ServerError(
            404,
            f"The model '{model_id}' does not exist",
            "invalid_request_error",
            "model_not_found",
        )
    return {"id": model_id, "object": "model", "created": created, "owned_by": model.provider}


async def retrieve_model(request: HTTPRequest) -> HTTPResponse:
    state: ServerState = request.app.state.server
    await state.auth.authenticate(request.headers.get("authorization"))
    return json_response(describe(state, request.path_params["model_id"]))

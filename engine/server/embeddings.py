"""POST /v1/embeddings: OpenAI's embeddings API through the engine's routing.

The body is OpenAI's (`input` a string or strings, `model` a policy or `provider/name`,
`dimensions`, `encoding_format` float or base64, `user`); the same authentication, key
allow-list, budget cap and `x-engine-*` headers as chat apply, and the engine routes the
call like a chat call (`Engine.aembed`: policies, failover, breakers, limits, budgets,
ledger with its cost).
"""

from __future__ import annotations

import time

from starlette.requests import Request as HTTPRequest
from starlette.responses import Response as HTTPResponse

from engine.embedding import parse_embedding_request
from engine.server.common import (
    POLICY_HEADER,
    ServerState,
    decode_json,
    error_response,
    json_response,
    merge_metadata,
)
from engine.server.errors import INTERNAL, to_http
from engine.server.exchange import read_body, response_headers, routing_target, str_headers
from engine.server.metrics import policy_label

__all__ = ["EMBEDDINGS_PATH", "embeddings"]

EMBEDDINGS_PATH = "/v1/embeddings"


async def embeddings(request: HTTPRequest) -> HTTPResponse:
    state: ServerState = request.app.state.server
    started = time.perf_counter()
    policy = request.headers.get(POLICY_HEADER) or None
    try:
        who = await state.auth.authenticate(request.headers.get("authorization"))
        limit = state.settings.max_body_bytes
        body = await read_body(request.receive, request.headers.get("content-length"), limit)
        data = decode_json(body)
        state.auth.authorize(who, routing_target(data, policy, state.engine.plan))
        merge_metadata(data, request.headers, who)
        req = parse_embedding_request(data)
        resp = await state.engine.aembed(req, policy)
    except Exception as exc:
        error = to_http(exc) or INTERNAL
        state.metrics.observe(
            policy=policy_label(policy, state.engine.plan.policies), provider="", model="",
            status=error.status, stream=False, seconds=time.perf_counter() - started,
        )  # fmt: skip
        return error_response(error)
    state.metrics.observe(
        policy=resp.policy, provider=resp.provider, model=resp.model, status=200, stream=False,
        seconds=time.perf_counter() - started, input_tokens=resp.usage.input_tokens,
        output_tokens=0, cost_usd=resp.cost_usd, attempts=resp.attempts,
    )  # fmt: skip
    headers = response_headers(
        resp.provider, resp.model, len(resp.attempts), resp.cost_usd, False, resp.policy
    )
    return json_response(resp.to_openai(req.encoding_format), headers=str_headers(headers))

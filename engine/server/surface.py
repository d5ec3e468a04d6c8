"""One route for every API the server speaks: translate in, call the engine, translate out.

A `Surface` (chat completions, Anthropic Messages, OpenAI Responses, legacy Completions)
turns its request body into the engine's chat request and the engine's answer, stream
events and errors back into its own wire format; chat's translation is the identity
(server/chat.py). Everything between is one path, `SurfaceRoute`: the same
authentication, key allow-list and budget cap, the same `Engine.arun` / `astream` (so the
same policies, failover, breakers, limits, budgets, cache and ledger), the same metrics and
answer headers. `SurfaceRoute` is a bare ASGI app that `EngineApp` calls before starlette's
middleware and router (which cost about as much CPU per call as the route's own work), so
an API costs what its translation costs and nothing more. Nothing here needs what
starlette adds: every failure becomes an error body in the API's shape, and anything
unexpected propagates to the server, which logs it and answers a bare 500.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any, Protocol

import orjson
from starlette.types import Receive, Scope, Send

from engine.messages import Request, parse_request
from engine.result import Response
from engine.server.access import REQUEST_ID_HEADER, incoming_id, new_id
from engine.server.anthropic_messages import AnthropicMessages
from engine.server.auth import ANONYMOUS, Principal
from engine.server.chat import ChatSurface
from engine.server.common import POLICY_HEADER, ServerState, decode_json, merge_metadata
from engine.server.completions import Completions
from engine.server.errors import INTERNAL, HTTPError, to_http
from engine.server.exchange import (
    DROPPED_HEADER,
    REQUEST_ID,
    JSONAnswer,
    StreamTracker,
    dropped_header,
    meta_headers,
    raw_headers,
    read_body,
    response_headers,
    routing_target,
    wanted_headers,
)
from engine.server.metrics import policy_label
from engine.server.responses import Responses
from engine.server.sse import SSE_HEADERS, Encoder, EventStreamResponse, aclose_events
from engine.state.key_limits import Ticket

__all__ = ["Surface", "SurfaceRoute", "surface_routes"]

log = logging.getLogger("engine.server")


class Surface(Protocol):
    """One wire API in front of the engine's chat call."""

    path: str

    def to_chat(self, data: dict[str, Any]) -> dict[str, Any]:
        """The engine's chat request for this body (ServerError 400 for what it cannot take)."""
        ...

    def answer(self, resp: Response, data: dict[str, Any]) -> dict[str, Any]:
        """The engine's answer as this API's response object."""
        ...

    def encoder(self, data: dict[str, Any], req: Request) -> Encoder:
        """This API's stream framing for one streamed call (`req`: its parsed request)."""
        ...

    def error_body(self, error: HTTPError) -> dict[str, Any]:
        """An error in this API's shape."""
        ...


class SurfaceRoute:
    """POST `surface.path` as a bare ASGI app (see the module docstring)."""

    def __init__(self, state: ServerState, surface: Surface) -> None:
        self.state = state
        self.surface = surface

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = wanted_headers(scope)
        # The list is scanned again (for the first sane id) only when the client sent an
        # x-request-id: a second pass over every request's headers cost ~4k instructions.
        rid = incoming_id(scope) if REQUEST_ID in headers else new_id()
        response = await self.handle(headers, receive)
        response.headers.append((REQUEST_ID_HEADER, rid))  # after content-type, as before
        await response(scope, receive, send)

    async def handle(
        self, headers: dict[str, str], receive: Receive
    ) -> JSONAnswer | EventStreamResponse:
        state, started = self.state, time.perf_counter()
        auth = state.auth
        policy = headers.get(POLICY_HEADER) or None
        stream, ticket = False, None
        try:
            # With no key configured every caller is ANONYMOUS (no allow-list, no limits):
            # nothing is awaited or checked for it (~5k instructions a request).
            who = ANONYMOUS
            if auth.enabled:
                who = await auth.authenticate(headers.get("authorization"))
            limit = state.settings.max_body_bytes
            data = decode_json(await read_body(receive, headers.get("content-length"), limit))
            chat = self.surface.to_chat(data)
            if who.policies is not None:  # the key's allow-list
                auth.authorize(who, routing_target(chat, policy, state.engine.plan))
            merge_metadata(chat, headers, who)
            req = parse_request(chat)
            stream = req.stream
            if who.limits is not None:  # the key's rpm / tpm / concurrency
                ticket = await auth.admit(who, req)
            if stream:
                return await self._stream(req, data, policy, who, started, ticket)
            resp = await state.engine.arun(req, policy=policy)
        except Exception as exc:
            auth.done(ticket)
            return self._failed(exc, policy, started, stream)
        auth.done(ticket, resp.usage)
        return self._answer(resp, req, data, who, started)

    def _answer(
        self, resp: Response, req: Request, data: dict[str, Any], who: Principal, started: float
    ) -> JSONAnswer:
        state = self.state
        state.metrics.observe(
            policy=resp.policy, provider=resp.provider, model=resp.model, status=200,
            stream=False, seconds=time.perf_counter() - started,
            input_tokens=resp.usage.input_tokens, output_tokens=resp.usage.output_tokens,
            cost_usd=resp.cost_usd, attempts=resp.attempts, cached=resp.cached,
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
            headers += raw_headers(meta_headers(resp.metadata))
        dropped = dropped_header(state.engine, req, resp.provider, resp.model)
        if dropped:
            headers.append((DROPPED_HEADER, dropped.encode("latin-1")))
        body = orjson.dumps(self.surface.answer(resp, data))
        return JSONAnswer(body, 200, headers)

    def _failed(
        self, exc: Exception, policy: str | None, started: float, stream: bool
    ) -> JSONAnswer:
        error = to_http(exc)
        if error is None:
            log.exception("unexpected error while serving %s", self.surface.path)
            error = INTERNAL
        elif error.status >= 500:
            log.warning("%s request failed: %s", self.surface.path, error.message)
        attempts = tuple(getattr(exc, "attempts", ()))
        self.state.metrics.observe(
            policy=policy_label(policy, self.state.engine.plan.policies), provider="", model="",
            status=error.status, stream=stream, seconds=time.perf_counter() - started,
            attempts=attempts,
        )  # fmt: skip
        headers = raw_headers(error.headers())
        if attempts:
            headers.append((b"x-engine-attempts", str(len(attempts)).encode()))
        return JSONAnswer(orjson.dumps(self.surface.error_body(error)), error.status, headers)

    async def _stream(
        self,
        req: Request,
        data: dict[str, Any],
        policy: str | None,
        who: Principal,
        started: float,
        ticket: Ticket | None,
    ) -> EventStreamResponse:
        """Wait for the first event (failover before it is invisible; errors get a status)."""
        events = self.state.engine.astream(req, policy=policy)
        try:
            first = await anext(aiter(events))
        except BaseException:
            with contextlib.suppress(Exception):
                await aclose_events(events)
            raise
        ttft = time.perf_counter() - started
        tracker = StreamTracker(self.state, who, first, started, ttft, ticket)
        headers = [
            *SSE_HEADERS,
            *response_headers(
                first.provider, first.model, len(first.attempts), None, first.cached, first.policy
            ),
        ]
        dropped = dropped_header(self.state.engine, req, first.provider, first.model)
        if dropped:
            headers.append((DROPPED_HEADER, dropped.encode("latin-1")))
        encoder = self.surface.encoder(data, req)
        return EventStreamResponse(first, events, encoder, headers, tracker.see, tracker.end)


def surface_routes(state: ServerState) -> dict[str, SurfaceRoute]:
    """The bare ASGI route of every surface, by path."""
    surfaces: list[Surface] = [ChatSurface(), AnthropicMessages(), Responses(), Completions()]
    return {s.path: SurfaceRoute(state, s) for s in surfaces}

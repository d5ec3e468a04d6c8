"""The parts of one API exchange every surface shares: the few request headers read, a
bounded body, the routing target, the engine's answer headers, a whole JSON answer as one
ASGI start + body pair, and the stream tracker that records usage and cost at the end.

Chat (app.py) and the other API surfaces (surface.py: Anthropic Messages, Responses,
legacy Completions) import these, so a request costs the same whichever door it came in.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

from starlette.types import Receive, Scope, Send

from engine.messages import Request, Usage
from engine.plan.compiled import Plan
from engine.pricing import CostBreakdown
from engine.providers.support import dropped, sets_optional
from engine.result import StreamEvent
from engine.server.access import REQUEST_ID_HEADER
from engine.server.auth import Principal
from engine.server.common import META_HEADERS, POLICY_HEADER, RoutingEngine, ServerState
from engine.server.errors import INTERNAL, ServerError, to_http
from engine.state.key_limits import Ticket

__all__ = [
    "DROPPED_HEADER",
    "REQUEST_ID",
    "JSONAnswer",
    "StreamTracker",
    "as_function_call",
    "as_function_call_delta",
    "dropped_header",
    "meta_headers",
    "raw_headers",
    "read_body",
    "response_headers",
    "routing_target",
    "str_headers",
    "wanted_headers",
]

#: x-request-id: read in the same pass, so the route knows whether the client sent one.
REQUEST_ID = REQUEST_ID_HEADER.decode()
#: Raw (lower-case, as ASGI servers send them) names of the headers the chat route reads.
_WANTED = {
    name.encode("latin-1"): name
    for name in ("authorization", "content-length", POLICY_HEADER, REQUEST_ID, *META_HEADERS)
}


def wanted_headers(scope: Scope) -> dict[str, str]:
    """The few headers the chat route reads, in one pass over the raw list (hot path: the
    names are matched as bytes, so only the wanted values are decoded)."""
    out: dict[str, str] = {}
    wanted = _WANTED
    for raw_name, raw_value in scope["headers"]:
        name = wanted.get(raw_name)
        if name is not None:
            out[name] = raw_value.decode("latin-1")
    return out


async def read_body(receive: Receive, declared: str | None, limit: int) -> bytes:
    """The body, refusing more than `limit` bytes (413) without reading it all first."""
    if declared and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ServerError(400, "client disconnected", "invalid_request_error", "disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(limit: int) -> ServerError:
    return ServerError(
        413, f"request body exceeds {limit} bytes", "invalid_request_error", "body_too_large"
    )


def routing_target(data: Mapping[str, Any], policy: str | None, plan: Plan) -> str | None:
    """The policy or model id this request will use, for the API key's allow-list."""
    model = data.get("model")
    return policy or (model if isinstance(model, str) and model else None) or plan.default_policy


def response_headers(
    provider: str,
    model: str,
    attempts: int,
    cost: float | None,
    cached: bool,
    policy: str | None,
    breakdown: CostBreakdown | None = None,
) -> list[tuple[bytes, bytes]]:
    """The answer's x-engine-* headers as ASGI pairs (latin-1, as starlette encodes them).

    Built as bytes with constant names and the money formatted straight into bytes: a
    dict of str encoded afterwards cost ~9k instructions a request more."""
    headers = [
        (b"x-engine-provider", provider.encode("latin-1")),
        (b"x-engine-model", model.encode("latin-1")),
        (b"x-engine-attempts", b"%d" % max(attempts, 1)),
        (b"x-engine-cache", b"hit" if cached else b"miss"),
    ]
    if cost is not None:
        headers.append((b"x-engine-cost-usd", b"%.8f" % cost))
    if breakdown is not None:  # the same cost, per kind of token
        headers.append((b"x-engine-cost-breakdown", _BREAKDOWN % _money(breakdown)))
    if policy:
        headers.append((b"x-engine-policy", policy.encode("latin-1")))
    return headers


_BREAKDOWN = b"input=%.8f, cache_read=%.8f, cache_write=%.8f, output=%.8f"


def _money(b: CostBreakdown) -> tuple[float, float, float, float]:
    return b.input_usd, b.cache_read_usd, b.cache_write_usd, b.output_usd


_JSON_TYPE = (b"content-type", b"application/json")


class JSONAnswer:
    """A whole JSON response as one ASGI start + body pair.

    It sends what starlette's `Response(..., media_type="application/json")` sends (the
    given headers, then content-length and content-type) without building a header
    object per call: the chat route is the hot path, and every microsecond here is paid
    on every request. It takes `headers` over (appends to the list it is given).
    """

    __slots__ = ("body", "headers", "status")

    def __init__(self, body: bytes, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        headers.append((b"content-length", b"%d" % len(body)))
        headers.append(_JSON_TYPE)
        self.body = body
        self.status = status
        self.headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})


def raw_headers(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    """ASGI header pairs, encoded as starlette encodes them (latin-1)."""
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


def str_headers(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """ASGI header pairs as a starlette `headers=` mapping (the reverse of raw_headers)."""
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in headers}


_META_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def meta_headers(metadata: Mapping[str, str]) -> dict[str, str]:
    """`x-engine-meta-<name>` per metadata entry a hook added; names that are no HTTP token
    are dropped, values lose control characters and anything outside latin-1."""
    out = {}
    for name, value in metadata.items():
        if _META_NAME.fullmatch(name):
            text = "".join(c for c in str(value)[:1024] if c >= " " and c != "\x7f")
            out[f"x-engine-meta-{name.lower()}"] = text.encode("latin-1", "replace").decode(
                "latin-1"
            )
    return out


class StreamTracker:
    """Collects usage and cost as events pass, and records them when the stream ends."""

    def __init__(
        self,
        state: ServerState,
        who: Principal,
        first: StreamEvent,
        started: float,
        ttft: float,
        ticket: Ticket | None = None,
    ) -> None:
        self.state, self.who, self.first, self.started = state, who, first, started
        self.ticket = ticket  # the key's request slot, given back when the stream ends
        self.last = first
        self.input_tokens = self.output_tokens = 0
        state.metrics.observe_ttft(first.policy, ttft)

    def see(self, event: StreamEvent) -> None:
        self.last = event
        if event.chunk.usage is not None:
            self.input_tokens = event.chunk.usage.input_tokens
            self.output_tokens = event.chunk.usage.output_tokens

    def end(self, error: BaseException | None, disconnected: bool) -> None:
        status = (
            499 if disconnected else (200 if error is None else (to_http(error) or INTERNAL).status)
        )
        cost = self.last.cost_usd
        self.state.auth.done(self.ticket, Usage(self.input_tokens, self.output_tokens))
        self.state.metrics.observe(
            policy=self.first.policy, provider=self.first.provider, model=self.first.model,
            status=status, stream=True, seconds=time.perf_counter() - self.started,
            input_tokens=self.input_tokens, output_tokens=self.output_tokens, cost_usd=cost,
            attempts=self.last.attempts or self.first.attempts, cached=self.first.cached,
        )  # fmt: skip


DROPPED_HEADER = b"x-engine-dropped"


def dropped_header(
    engine: RoutingEngine, request: Request, provider: str, model: str
) -> str | None:
    """`field (why); ...` for what the answering model was not sent, else None."""
    if not sets_optional(request):
        return None  # the usual request: no plan lookups (~2k instructions)
    plan = engine.plan
    target = plan.providers.get(provider)
    if target is None:
        return None
    plan_model = plan.models.get(model)
    options = plan_model.options if plan_model is not None else None
    names = dropped(request, target.protocol, target.options if options is None else options)
    return "; ".join(names) or None


def as_function_call(body: dict[str, Any]) -> None:
    """A chat.completion for a legacy `functions` caller: the first tool call as the
    message's `function_call`, finish reason `function_call` (what such callers read)."""
    choice = body["choices"][0]
    calls = choice["message"].pop("tool_calls", None)
    if calls:
        choice["message"]["function_call"] = calls[0]["function"]
        choice["finish_reason"] = "function_call"


def as_function_call_delta(choice: dict[str, Any]) -> bool:
    """A chat.completion.chunk's choice for a legacy `functions` caller, as OpenAI streams
    it: the first tool call's deltas as `delta.function_call`, other calls left out, finish
    reason `function_call`. False when nothing is left to send in this chunk."""
    delta = choice["delta"]
    calls = delta.pop("tool_calls", None)
    if calls:
        first = [c["function"] for c in calls if c["index"] == 0]
        if first:
            delta["function_call"] = first[0]
    if choice["finish_reason"] == "tool_calls":
        choice["finish_reason"] = "function_call"
    return bool(delta) or choice["finish_reason"] is not None

"""OpenTelemetry traces: one span per request, one per attempt, exported over OTLP/HTTP.

On only when the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set;
otherwise nothing here is imported or installed, and a request pays nothing for it (the
attempt observer stays None, the transport reads one empty context variable).

    request span   SERVER, "chat <policy or model>": parent from the incoming `traceparent`;
                   http.* plus, from the answer, the GenAI conventions (`gen_ai.system`,
                   `gen_ai.request.model`, `gen_ai.response.model`, `gen_ai.usage.*`) and
                   ours (`engine.policy`, `engine.rule`, `engine.outcome`,
                   `engine.cost_usd`, `engine.attempts`, `engine.request_id`)
    attempt span   CLIENT, child of the request span, one per try that reached a provider:
                   the same GenAI attributes for that try, `engine.fallback_index`,
                   `engine.retry`, `engine.outcome`, `engine.cost_usd`; its context is the
                   `traceparent` sent to the upstream

The exporter (and its endpoint, headers, timeout) is configured by the usual OTEL_* variables;
`OTEL_SERVICE_NAME` names the service (default `llm-routing-engine`). Spans are batched and
sent off the request path by the SDK's BatchSpanProcessor.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.tracecontext import OUTGOING_TRACEPARENT

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Tracer

    from engine.endpoints import Endpoint
    from engine.runtime.call.walk import Candidate
    from engine.state.protocols import LedgerRow

#: Probes and scrapes: frequent, and nothing to follow.
UNTRACED = frozenset({"/healthz", "/readyz", "/metrics"})
ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def enabled(env: Mapping[str, str] | None = None) -> bool:
    """Whether an OTLP endpoint is configured (the only switch)."""
    env = os.environ if env is None else env
    return any(env.get(name) for name in ENDPOINT_VARS)


class Tracing:
    """The tracer, the ASGI wrapper for request spans, the hooks and the attempt observer."""

    def __init__(self, provider: TracerProvider, protocols: Mapping[str, str]) -> None:
        from opentelemetry import trace

        self.provider = provider
        self.tracer: Tracer = provider.get_tracer("engine")
        self.protocols = protocols  # provider id -> wire protocol, for gen_ai.system
        self._trace = trace

    # -- request spans ----------------------------------------------------------------------

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """The app with a SERVER span around every HTTP request."""
        return _RequestSpans(app, self)

    def current_trace_id(self) -> str | None:
        """The current span's trace id (hex), for the access log."""
        ctx = self._trace.get_current_span().get_span_context()
        return f"{ctx.trace_id:032x}" if ctx.is_valid else None

    async def after_response(self, request: Any, response: Any) -> None:
        """Engine hook: the answer's facts on the request span."""
        span = self._trace.get_current_span()
        if not span.is_recording():
            return
        span.update_name(f"chat {response.policy or response.model}")
        span.set_attributes(
            _clean(
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.system": self.protocols.get(response.provider, response.provider),
                    "gen_ai.request.model": request.model or response.policy or response.model,
                    "gen_ai.response.model": response.model,
                    "gen_ai.usage.input_tokens": response.usage.input_tokens,
                    "gen_ai.usage.output_tokens": response.usage.output_tokens,
                    "engine.policy": response.policy,
                    "engine.rule": response.rule,
                    "engine.provider": response.provider,
                    "engine.outcome": "ok",
                    "engine.cached": response.cached,
                    "engine.cost_usd": response.cost_usd,
                    "engine.attempts": len(response.attempts),
                    "engine.request_id": response.id,
                }
            )
        )

    async def on_error(self, request: Any, error: BaseException) -> None:
        """Engine hook: a failed call marks the request span as an error."""
        from opentelemetry.trace import Status, StatusCode

        span = self._trace.get_current_span()
        if span.is_recording():
            kind = getattr(error, "kind", None) or type(error).__name__
            span.set_attribute("engine.outcome", str(kind))
            span.set_attribute("engine.attempts", len(getattr(error, "attempts", ()) or ()))
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))

    # -- attempt spans (runtime/observe.py) -------------------------------------------------

    def started(self, cand: Candidate, endpoint: Endpoint, retry: int) -> Any:
        """A CLIENT span for the try; its context becomes the outgoing traceparent."""
        from opentelemetry.trace import SpanKind

        model = cand.scored.model
        span = self.tracer.start_span(
            f"chat {endpoint.upstream_model}",
            kind=SpanKind.CLIENT,
            attributes=_clean(
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.system": endpoint.protocol,
                    "gen_ai.request.model": endpoint.upstream_model,
                    "engine.provider": endpoint.provider,
                    "engine.model": model.id,
                    "engine.policy": cand.policy,
                    "engine.rule": cand.rule,
                    "engine.retry": retry,
                    "server.address": _host(endpoint.base_url),
                }
            ),
        )
        ctx = span.get_span_context()
        header = b"00-%032x-%016x-%02x" % (ctx.trace_id, ctx.span_id, int(ctx.trace_flags))
        return span, OUTGOING_TRACEPARENT.set(header)

    def ended(self, handle: Any, row: LedgerRow) -> None:
        """The try's outcome, tokens and cost on its span, which ends now."""
        from opentelemetry.trace import Status, StatusCode

        if handle is None:
            return
        span, token = handle
        try:
            OUTGOING_TRACEPARENT.reset(token)
        except ValueError:  # closed from another context (a stream's last step): just clear
            OUTGOING_TRACEPARENT.set(None)
        span.set_attributes(
            _clean(
                {
                    "gen_ai.response.model": row.model,
                    "gen_ai.usage.input_tokens": row.input_tokens,
                    "gen_ai.usage.output_tokens": row.output_tokens,
                    "engine.outcome": row.outcome,
                    "engine.cost_usd": row.cost_usd,
                    "engine.fallback_index": row.fallback_index,
                    "engine.latency_ms": row.latency_ms,
                    "engine.request_id": row.request_id,
                }
            )
        )
        if row.outcome != "ok":
            span.set_status(Status(StatusCode.ERROR, row.outcome))
        span.end()

    def shutdown(self) -> None:
        """Send what is buffered (the server's shutdown)."""
        self.provider.shutdown()


class _RequestSpans:
    """ASGI: a SERVER span per HTTP request, its parent taken from `traceparent`."""

    def __init__(self, app: ASGIApp, tracing: Tracing) -> None:
        self.app = app
        self.tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNTRACED:
            await self.app(scope, receive, send)
            return
        from opentelemetry import context, propagate
        from opentelemetry.trace import SpanKind, Status, StatusCode

        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        parent = propagate.extract(carrier)
        method, path = scope["method"], scope["path"]
        span = self.tracing.tracer.start_span(
            f"{method} {path}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": path},
        )
        token = context.attach(self.tracing._trace.set_span_in_context(span, parent))

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = int(message["status"])
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            context.detach(token)
            span.end()


def _clean(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """OpenTelemetry refuses None values: leave those attributes out."""
    return {k: v for k, v in attributes.items() if v is not None}


def _host(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).hostname or ""


def configure(protocols: Mapping[str, str], env: Mapping[str, str] | None = None) -> Tracing | None:
    """Tracing with an OTLP/HTTP exporter when an endpoint is configured, else None."""
    if not enabled(env):
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    env = os.environ if env is None else env
    name = env.get("OTEL_SERVICE_NAME") or "llm-routing-engine"
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return Tracing(provider, protocols)


def install(tracing: Tracing, engine: Any) -> None:
    """Hooks on the engine for the request span, the observer for attempt spans."""
    engine.add_hook("after_response", tracing.after_response)
    engine.add_hook("on_error", tracing.on_error)
    observe = getattr(engine, "set_observer", None)
    if observe is not None:
        observe(tracing)


def attach(app: Any, engine: Any) -> Tracing | None:
    """Trace this app and engine when OTLP is configured (create_app calls this once)."""
    protocols = {p.id: p.protocol for p in engine.plan.providers.values()}
    tracing = configure(protocols)
    if tracing is not None:
        install(tracing, engine)
        app.access.trace_id = tracing.current_trace_id
        app.entry = tracing.wrap(app.entry)
    return tracing

"""OpenTelemetry from the real server process, received by an OTLP/HTTP collector run here."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from engine.testing.fakes import Fault
from tests.ops.conftest import MSG, start

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


class Collector:
    """Accepts OTLP/HTTP protobuf exports on /v1/traces and keeps the decoded spans."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.url = ""

    async def receive(self, request: web.Request) -> web.Response:
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        for resource in message.resource_spans:
            for scope in resource.scope_spans:
                self.spans.extend(scope.spans)
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def wait_for(self, count: int) -> list[Span]:
        for _ in range(500):  # bounded: about 10 s
            if len(self.spans) >= count:
                return self.spans
            await asyncio.sleep(0.02)
        raise AssertionError(f"collector got {len(self.spans)} spans, wanted {count}")


@pytest.fixture
async def collector() -> AsyncIterator[Collector]:
    found = Collector()
    app = web.Application()
    app.router.add_post("/v1/traces", found.receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    found.url = f"http://127.0.0.1:{port}"
    try:
        yield found
    finally:
        await runner.cleanup()


def attrs(span: Span) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in span.attributes:
        value = kv.value
        out[kv.key] = getattr(value, value.WhichOneof("value"))
    return out


async def test_request_and_attempt_spans_reach_the_collector(
    tmp_path: Path, collector: Collector
) -> None:
    """A failed-over call gives a SERVER span under the caller's traceparent and one CLIENT
    span per attempt with GenAI attributes; the upstream gets the attempt's traceparent."""
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_BSP_SCHEDULE_DELAY": "50"}
    async with start(tmp_path, env=env) as server:
        server.primary.script([Fault(status=500)])
        async with server.http() as http:
            resp = await http.post(
                "/v1/chat/completions",
                json={"model": "chat", "messages": MSG},
                headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"},
            )
        assert resp.status_code == 200
        spans = await collector.wait_for(3)
        upstream_header = server.backup.requests[0].headers["traceparent"]
    (request,) = [s for s in spans if s.kind == Span.SPAN_KIND_SERVER]
    clients = [s for s in spans if s.kind == Span.SPAN_KIND_CLIENT]
    attempts = sorted(clients, key=lambda s: attrs(s)["engine.fallback_index"])
    assert request.trace_id.hex() == TRACE_ID and request.parent_span_id.hex() == PARENT_ID
    top = attrs(request)
    assert top["gen_ai.system"] == "openai" and top["gen_ai.request.model"] == "chat"
    assert top["gen_ai.response.model"] == "backup/gpt-4o-mini"
    assert top["gen_ai.usage.input_tokens"] > 0 and top["gen_ai.usage.output_tokens"] > 0
    assert top["engine.policy"] == "chat" and top["engine.outcome"] == "ok"
    assert top["engine.attempts"] == 2 and top["engine.cost_usd"] > 0
    assert top["http.response.status_code"] == 200
    assert len(attempts) == 2
    failed, answered = (attrs(s) for s in attempts)
    for span in attempts:
        assert span.trace_id.hex() == TRACE_ID and span.parent_span_id == request.span_id
    assert failed["engine.provider"] == "primary" and failed["engine.outcome"] == "unavailable"
    assert attempts[0].status.code == attempts[0].status.STATUS_CODE_ERROR
    assert answered["engine.outcome"] == "ok" and answered["engine.fallback_index"] == 1
    assert answered["gen_ai.request.model"] == "gpt-4o-mini"
    assert answered["gen_ai.response.model"] == "backup/gpt-4o-mini"
    assert answered["gen_ai.usage.output_tokens"] == top["gen_ai.usage.output_tokens"]
    assert answered["engine.cost_usd"] == pytest.approx(top["engine.cost_usd"])
    assert upstream_header == f"00-{TRACE_ID}-{attempts[1].span_id.hex()}-01"


async def test_without_an_endpoint_nothing_is_traced_or_sent(tmp_path: Path) -> None:
    """No OTEL endpoint: no traceparent goes upstream, even when the caller sent one."""
    async with start(tmp_path) as server:
        async with server.http() as http:
            resp = await http.post(
                "/v1/chat/completions",
                json={"model": "chat", "messages": MSG},
                headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"},
            )
        assert resp.status_code == 200
        assert "traceparent" not in server.primary.requests[0].headers

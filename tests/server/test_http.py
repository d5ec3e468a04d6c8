"""Raw HTTP against the server: malformed input, other routes, disconnects, metrics."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import httpx

from engine.errors import AttemptRecord
from engine.server.settings import ServerSettings
from tests.server.conftest import Running, serving
from tests.server.standin import StandInEngine

MSG = [{"role": "user", "content": "hello"}]


def _is_openai_error(resp: httpx.Response, status: int) -> dict[str, object]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert "Traceback" not in resp.text
    return dict(error)


async def test_malformed_json_is_400(server: Running) -> None:
    """A body that is not JSON is a 400 invalid_json error."""
    async with server.http() as http:
        resp = await http.post("/v1/chat/completions", content=b'{"model": "fast",')
    assert _is_openai_error(resp, 400)["code"] == "invalid_json"


async def test_empty_body_is_400(server: Running) -> None:
    """An empty body is a 400 naming the problem."""
    async with server.http() as http:
        resp = await http.post("/v1/chat/completions", content=b"")
    assert "empty" in str(_is_openai_error(resp, 400)["message"])


async def test_non_object_body_is_400(server: Running) -> None:
    """A JSON array or string body is a 400, not a crash."""
    async with server.http() as http:
        resp = await http.post("/v1/chat/completions", json=[1, 2])
    assert "JSON object" in str(_is_openai_error(resp, 400)["message"])


async def test_wrong_types_name_the_field(server: Running) -> None:
    """Wrong field types are a 400 whose message names the JSON path."""
    async with server.http() as http:
        resp = await http.post("/v1/chat/completions", json={"model": "fast", "messages": "hi"})
    assert "messages" in str(_is_openai_error(resp, 400)["message"])


async def test_unknown_top_level_field_is_400(server: Running) -> None:
    """An unknown request field is rejected rather than silently dropped."""
    async with server.http() as http:
        resp = await http.post(
            "/v1/chat/completions", json={"model": "fast", "messages": MSG, "temprature": 1}
        )
    assert "temprature" in str(_is_openai_error(resp, 400)["message"])


async def test_bad_metadata_type_is_400(server: Running) -> None:
    """A non-object metadata is a 400 from validation, not a server error."""
    async with server.http() as http:
        resp = await http.post(
            "/v1/chat/completions",
            json={"model": "fast", "messages": MSG, "metadata": "x"},
            headers={"x-engine-workspace": "w"},
        )
    assert "metadata" in str(_is_openai_error(resp, 400)["message"])


async def _chunks(n: int, size: int) -> AsyncIterator[bytes]:
    for _ in range(n):
        yield b"x" * size


async def test_oversized_body_is_413() -> None:
    """A body over max_body_bytes is refused with 413 before the engine sees it."""
    engine = StandInEngine()
    settings = ServerSettings(max_body_bytes=2048)
    async with serving(engine, settings) as running, running.http() as http:
        big = {"model": "fast", "messages": [{"role": "user", "content": "x" * 5000}]}
        resp = await http.post("/v1/chat/completions", json=big)
        chunked = await http.post("/v1/chat/completions", content=_chunks(5, 1000))
    assert _is_openai_error(resp, 413)["code"] == "body_too_large"
    _is_openai_error(chunked, 413)
    assert engine.calls == []


async def test_unknown_route_and_wrong_method_are_openai_errors(server: Running) -> None:
    """404 and 405 come back in the OpenAI error format too."""
    async with server.http() as http:
        missing = await http.get("/v1/nothing")
        wrong = await http.get("/v1/chat/completions")
    _is_openai_error(missing, 404)
    _is_openai_error(wrong, 405)


async def test_models_lists_policies_and_models(server: Running) -> None:
    """GET /v1/models lists every policy and every model, with the model's enabled flag."""
    async with server.http() as http:
        data = (await http.get("/v1/models")).json()["data"]
    kinds = {d["id"]: d["kind"] for d in data}
    assert kinds == {"fast": "policy", "cheap": "policy", "mock/fast": "model"}


async def test_health_and_readiness(server: Running) -> None:
    """/healthz is always ok; /readyz reports the enabled providers."""
    async with server.http() as http:
        health = await http.get("/healthz")
        ready = await http.get("/readyz")
    assert health.json() == {"status": "ok"}
    assert ready.status_code == 200 and ready.json()["providers"] == ["mock"]


async def test_stats_include_engine_and_server(server: Running) -> None:
    """/v1/stats returns the engine's stats and the server's own counters."""
    async with server.http() as http:
        await http.post("/v1/chat/completions", json={"model": "fast", "messages": MSG})
        stats = (await http.get("/v1/stats")).json()
    assert stats["engine"]["requests"] == 1
    assert "uptime_s" in stats["server"]


async def test_metrics_count_requests_tokens_cost_and_state(server: Running) -> None:
    """/metrics exposes request, token, cost, TTFT and breaker-state series after traffic."""
    async with server.http() as http:
        await http.post("/v1/chat/completions", json={"model": "fast", "messages": MSG})
        await http.post(
            "/v1/chat/completions", json={"model": "fast", "messages": MSG, "stream": True}
        )
        await http.post("/v1/chat/completions", json={"model": "nope", "messages": MSG})
        text = (await http.get("/metrics")).text
    assert (
        'engine_requests_total{policy="fast",provider="mock",status="200",stream="false"} 1.0'
        in text
    )
    assert (
        'engine_requests_total{policy="fast",provider="mock",status="200",stream="true"} 1.0'
        in text
    )
    assert 'status="404"' in text
    assert 'engine_tokens_total{direction="input",model="mock/fast",provider="mock"} 6.0' in text
    assert "engine_cost_usd_total" in text
    assert 'engine_ttft_seconds_count{policy="fast"} 1.0' in text
    assert 'engine_breaker_state{target="mock"} 0.0' in text
    assert 'engine_rate_limit_queued{provider="mock"} 0.0' in text


async def test_client_disconnect_cancels_the_engine_stream(server: Running) -> None:
    """Closing the connection mid-stream closes the engine's iterator (upstream cancelled)."""
    server.engine.hold_stream = True
    body = {"model": "fast", "messages": MSG, "stream": True}
    async with server.http() as http, http.stream("POST", "/v1/chat/completions", json=body) as r:
        async for line in r.aiter_lines():
            if line.startswith("data:"):
                break
    await asyncio.wait_for(server.engine.stream_closed.wait(), 5)
    assert server.engine.closed_streams == 1


async def test_midstream_failure_sends_an_error_event() -> None:
    """An engine failure after the first chunk ends the stream with an SSE error event."""

    class Failing(StandInEngine):
        async def _stream(self, request, policy):  # type: ignore[no-untyped-def, override]
            async for event in super()._stream(request, policy):
                yield event
                raise ConnectionResetError("upstream went away")

    async with serving(Failing()) as running, running.http() as http:
        resp = await http.post(
            "/v1/chat/completions", json={"model": "fast", "messages": MSG, "stream": True}
        )
    lines = [ln for ln in resp.text.splitlines() if ln.startswith("data:")]
    assert '"error"' in lines[-1]
    assert "[DONE]" not in resp.text


async def test_readyz_is_503_when_no_provider_is_enabled(standin: StandInEngine) -> None:
    """/readyz answers 503 'no provider enabled' when every provider of the plan is disabled."""
    off = {k: dataclasses.replace(p, enabled=False) for k, p in standin.plan.providers.items()}
    standin.plan = dataclasses.replace(standin.plan, providers=off)
    async with serving(standin) as running, running.http() as http:
        ready = await http.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["status"] == "no provider enabled" and ready.json()["providers"] == []


async def test_cost_header_is_omitted_when_the_price_is_unknown(standin: StandInEngine) -> None:
    """An answer of unknown cost carries no x-engine-cost-usd header rather than a fake 0."""
    standin.cost_usd = None
    async with serving(standin) as running, running.http() as http:
        resp = await http.post("/v1/chat/completions", json={"model": "fast", "messages": MSG})
    assert resp.status_code == 200 and resp.headers["x-engine-provider"] == "mock"
    assert "x-engine-cost-usd" not in resp.headers


async def test_metrics_count_failed_attempts_by_kind_and_fallbacks(standin: StandInEngine) -> None:
    """A request answered after a failed attempt shows in attempt-failure and fallback series."""
    standin.attempts = (
        AttemptRecord("openai", "openai/gpt-4o", "unavailable", "503"),
        AttemptRecord("mock", "mock/fast", "ok", fallback_index=1),
    )
    async with serving(standin) as running, running.http() as http:
        await http.post("/v1/chat/completions", json={"model": "fast", "messages": MSG})
        text = (await http.get("/metrics")).text
    assert 'engine_attempt_failures_total{kind="unavailable",provider="openai"} 1.0' in text
    assert 'engine_fallbacks_total{policy="fast"} 1.0' in text


async def test_chat_through_starlettes_router_answers_as_the_direct_route() -> None:
    """Behind a root path the chat route is reached through starlette: same answer, same
    headers, same errors as the direct way in."""
    from engine.server import create_app

    app = create_app(StandInEngine(), ServerSettings())
    body = {"model": "fast", "messages": MSG}
    routed = httpx.ASGITransport(app=app, root_path="/api")  # type: ignore[arg-type]
    direct = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=routed, base_url="http://t") as http:
        via_router = await http.post("/api/v1/chat/completions", json=body)
        via_router_bad = await http.post("/api/v1/chat/completions", content=b"{")
    async with httpx.AsyncClient(transport=direct, base_url="http://t") as http:
        straight = await http.post("/v1/chat/completions", json=body)
        straight_bad = await http.post("/v1/chat/completions", content=b"{")
    assert via_router.status_code == straight.status_code == 200
    assert via_router.json()["choices"] == straight.json()["choices"]
    skip = {"date", "content-length", "x-request-id"}  # a fresh id per request
    assert {k: v for k, v in via_router.headers.items() if k not in skip} == {
        k: v for k, v in straight.headers.items() if k not in skip
    }
    assert via_router_bad.status_code == straight_bad.status_code == 400
    assert via_router_bad.json() == straight_bad.json()

"""Seed features: hooks as middleware (logging, metrics, custom), environment-variable
configuration, the CLI, and the service as an OpenAI-compatible server used through the
official `openai` SDK (chat, streaming, tools, policy and metadata headers, stats)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import uvicorn

from engine import ConfigError, Engine, Request, Response, UnknownModelError
from engine.cli import main
from engine.server import create_app
from engine.server.settings import ServerSettings, load_settings
from engine.testing.clock import FakeClock
from engine.testing.fakes import FakeOpenAI, Fault
from tests.acceptance.conftest import MOCK_MODELS, ask, shipped_config, write_config
from tests.acceptance.test_calls import WEATHER
from tests.acceptance.test_routing import ROUTER


def mock_config(
    tmp_path: Path, route: str = "strategy: ordered\ncandidates: [mock/fast]\n"
) -> Path:
    return write_config(tmp_path / "cfg", MOCK_MODELS, {"default": route})


async def test_logging_metrics_and_custom_middleware_hooks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Middleware: logging, metrics and a custom hook that rewrites the request."""
    eng = Engine.from_config(mock_config(tmp_path), clock=FakeClock())
    log = logging.getLogger("acceptance.llm")
    metrics: dict[str, Any] = {"requests": 0, "errors": 0, "tokens": 0}

    @eng.hook("before_request")
    async def tag_workspace(request: Request) -> Request:
        metadata = {**request.metadata, "workspace": "team-a"}
        return request.model_copy(update={"metadata": metadata})

    @eng.hook("after_response")
    async def record(request: Request, response: Response) -> None:
        metrics["requests"] += 1
        metrics["tokens"] += response.usage.total_tokens
        log.info(
            "answered %s via %s for %s",
            response.model,
            response.provider,
            request.metadata["workspace"],
        )

    @eng.hook("on_error")
    async def count_error(request: Request, error: BaseException) -> None:
        metrics["errors"] += 1

    with caplog.at_level(logging.INFO, logger="acceptance.llm"):
        resp = await eng.arun(ask())
        with pytest.raises(UnknownModelError, match="unknown provider"):
            await eng.arun(ask(model="nope/missing"))
    await eng.aclose()
    assert metrics == {"requests": 1, "errors": 1, "tokens": resp.usage.total_tokens}
    assert "answered mock/fast via mock for team-a" in caplog.text


async def test_environment_variables_configure_providers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Env-var configuration: a key enables its provider, <ID>_BASE_URL points it elsewhere."""
    async with FakeOpenAI(api_key="sk-acc-env-0010") as oa:
        cfg = shipped_config(tmp_path / "shipped")
        off = Engine.from_config(cfg, clock=FakeClock())
        monkeypatch.setenv("OPENAI_API_KEY", "sk-acc-env-0010")
        monkeypatch.setenv("OPENAI_BASE_URL", oa.url)
        on = Engine.from_config(cfg, clock=FakeClock())
        resp = await on.arun(ask(model="openai/gpt-4o-mini"))
        await off.aclose()
        await on.aclose()
    assert not off.is_available("openai") and on.is_available("openai")
    assert resp.provider == "openai" and len(oa.requests) == 1
    assert oa.requests[0].headers["authorization"] == "Bearer sk-acc-env-0010"


def test_cli_validate_and_explain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """CLI: validate reports problems with file:line, explain shows the routing decision."""
    cfg = mock_config(tmp_path, ROUTER)
    assert main(["validate", str(cfg)]) == 0
    capsys.readouterr()
    request = tmp_path / "request.json"
    request.write_text(
        json.dumps(ask("Write a REST API endpoint", metadata={"task_type": "code_generation"}))
    )
    code = main(
        [
            "explain",
            "--config",
            str(cfg),
            "--policy",
            "default",
            "--request",
            str(request),
            "--format",
            "json",
        ]
    )
    explained = json.loads(capsys.readouterr().out)
    assert code == 0 and explained["rule"] == "code"
    assert explained["ranked"][0]["model"] == "mock/coder"
    (cfg / "routes" / "broken.yaml").write_text("strategy: fastest_please\n")
    assert main(["validate", str(cfg)]) == 1
    assert "broken.yaml:1:" in capsys.readouterr().out


@contextlib.asynccontextmanager
async def serving(
    engine: Engine, settings: ServerSettings | None = None
) -> AsyncIterator[openai.AsyncOpenAI]:
    """The server app on a loopback socket, and an official SDK client pointed at it."""
    app = create_app(engine, settings or ServerSettings(reload=False))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.005)
    port = sock.getsockname()[1]
    client = openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0
    )
    try:
        yield client
    finally:
        await client.close()
        server.should_exit = True
        await task
        sock.close()


async def test_server_speaks_openai_chat_stream_and_tools(tmp_path: Path) -> None:
    """Running as a service: chat, streaming, tools, stats and Prometheus metrics over HTTP."""
    eng = Engine.from_config(mock_config(tmp_path, ROUTER))
    async with serving(eng) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="default", messages=[{"role": "user", "content": "Hello!"}], max_tokens=50
        )
        chat = raw.parse()
        chunks = [
            c
            async for c in await client.chat.completions.create(
                model="default",
                messages=[{"role": "user", "content": "Write a story"}],
                stream=True,
                stream_options={"include_usage": True},
            )
        ]
        tools = await client.chat.completions.create(
            model="mock/coder",
            messages=[{"role": "user", "content": "Weather in Paris?"}],
            tools=[WEATHER],
        )  # type: ignore[list-item]
        coded = await client.chat.completions.with_raw_response.create(
            model="default",
            messages=[{"role": "user", "content": "Write code"}],
            extra_headers={"x-engine-task-type": "code_generation"},
        )
        stats = await client.get("/stats", cast_to=object)
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(str(client.base_url).replace("/v1/", "/metrics"))).text
    await eng.aclose()
    assert "Hello!" in (chat.choices[0].message.content or "")
    assert raw.headers["x-engine-provider"] == "mock"
    assert raw.headers["x-engine-model"] == chat.model == "mock/fast"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Write a story" in text and chunks[-1].usage is not None
    assert tools.choices[0].message.tool_calls[0].function.name == "get_weather"  # type: ignore[index]
    assert coded.headers["x-engine-model"] == "mock/coder"
    assert stats["engine"]["totals"]["requests"] == 4  # type: ignore[index]
    assert "engine_requests_total{" in metrics and "engine_tokens_total{" in metrics


async def test_server_errors_use_openai_error_classes(tmp_path: Path) -> None:
    """Error handling as a service: unknown policy is 404 and all-failed is 5xx, as SDK errors."""
    async with FakeOpenAI() as oa:
        oa.default_fault = Fault(status=500)
        models = MOCK_MODELS.replace(
            "models:\n",
            f"  openai:\n    protocol: openai\n    base_url: {oa.url}\n    api_key: sk-acc-0011\n"
            "models:\n  openai/gpt-4o-mini:\n    capabilities: [chat]\n"
            "    context_window: 128000\n    input_price: 0.15\n    output_price: 0.6\n",
            1,
        )
        route = "strategy: ordered\ncandidates: [openai/gpt-4o-mini]\nretries: {max_retries: 0}\n"
        eng = Engine.from_config(write_config(tmp_path / "cfg", models, {"default": route}))
        async with serving(eng) as client:
            with pytest.raises(openai.NotFoundError):
                await client.chat.completions.create(
                    model="no_such_policy", messages=[{"role": "user", "content": "hi"}]
                )
            with pytest.raises(openai.APIStatusError) as failed:
                await client.chat.completions.create(
                    model="default", messages=[{"role": "user", "content": "hi"}]
                )
        await eng.aclose()
    assert failed.value.status_code in (502, 503)
    assert "sk-acc-0011" not in str(failed.value.body)


async def test_server_warms_connections_on_start_and_keeps_them_alive(tmp_path: Path) -> None:
    """Connection warmer as a service: ENGINE_WARM_ON_START / ENGINE_KEEP_ALIVE ping providers."""
    settings = load_settings(
        tmp_path,
        {"reload": False},
        env={"ENGINE_WARM_ON_START": "true", "ENGINE_KEEP_ALIVE": "30"},
    )
    clock = FakeClock()
    async with FakeOpenAI() as oa:
        models = MOCK_MODELS.replace(
            "models:\n",
            f"  openai:\n    protocol: openai\n    base_url: {oa.url}\n    api_key: sk-acc-0012\n"
            "models:\n",
            1,
        )
        eng = Engine.from_config(
            write_config(
                tmp_path / "cfg",
                models,
                {"default": "strategy: ordered\ncandidates: [mock/fast]\n"},
            ),
            clock=clock,
        )
        async with serving(eng, settings):
            for _ in range(500):
                if eng.pings.view("openai")["total_pings"] >= 2:
                    break
                await asyncio.sleep(0.001)
            pinged = eng.pings.view("openai")
    assert (settings.warm_on_start, settings.keep_alive_s) == (True, 30.0)
    assert pinged["total_pings"] >= 2 and pinged["ping_failures"] == 0
    assert 30 in clock.slept


async def test_server_routing_inputs_preferred_model_fallbacks_and_cache(tmp_path: Path) -> None:
    """As a service: a preferred model with fallbacks, cache hits and per-request bypass."""
    async with FakeOpenAI() as oa:
        oa.default_fault = Fault(status=401)
        models = MOCK_MODELS.replace(
            "models:\n",
            f"  openai:\n    protocol: openai\n    base_url: {oa.url}\n    api_key: sk-acc-0014\n"
            "models:\n  openai/gpt-4o-mini:\n    context_window: 128000\n"
            "    input_price: 1\n    output_price: 1\n",
            1,
        )
        route = "strategy: ordered\ncandidates: [mock/fast]\ncache: {enabled: true}\n"
        eng = Engine.from_config(write_config(tmp_path / "cfg", models, {"default": route}))
        hi = [{"role": "user", "content": "hi"}]
        async with serving(eng) as client:
            create = client.chat.completions.with_raw_response.create
            preferred = await create(
                model="openai/gpt-4o-mini", messages=hi, extra_body={"fallbacks": ["default"]}
            )
            caches = [
                (await create(model="default", messages=hi, extra_body=extra)).headers[
                    "x-engine-cache"
                ]
                for extra in ({}, {}, {"cache": False})
            ]
        await eng.aclose()
    assert preferred.headers["x-engine-model"] == "mock/fast"
    assert preferred.headers["x-engine-attempts"] == "2" and len(oa.requests) == 1
    assert caches == ["miss", "hit", "miss"]


async def test_default_routing_strategy_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Env-var strategy choice: ENGINE_POLICY picks the policy used when a call names none."""
    routes = {
        "default": "strategy: ordered\ncandidates: [mock/fast]\n",
        "quality": "strategy: quality_optimized\n",
    }
    cfg = write_config(tmp_path / "cfg", MOCK_MODELS, routes)
    monkeypatch.setenv("ENGINE_POLICY", "quality")
    eng = Engine.from_config(cfg, clock=FakeClock())
    chosen = (await eng.arun(ask())).model
    eng.reload()
    after_reload = (await eng.arun(ask("again"))).model
    await eng.aclose()
    monkeypatch.setenv("ENGINE_POLICY", "qualty")
    with pytest.raises(ConfigError, match=r"'qualty'.*known: default, quality"):
        Engine.from_config(cfg)
    assert chosen == after_reload == "mock/smart"

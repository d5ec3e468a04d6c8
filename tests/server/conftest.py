"""Fixtures: the server app on a real loopback socket inside the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
import uvicorn

from engine.server import create_app
from engine.server.guard import GuardedHttpToolsProtocol
from engine.server.reload import ConfigWatcher
from engine.server.settings import ServerSettings
from tests.server.standin import StandInEngine


@dataclass
class Running:
    url: str
    engine: Any
    app: Any

    def client(self, api_key: str = "sk-test-none", **kw: Any) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0, **kw)

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=10)


@contextlib.asynccontextmanager
async def serving(
    engine: Any, settings: ServerSettings | None = None, watcher: ConfigWatcher | None = None
) -> AsyncIterator[Running]:
    """Run uvicorn on a pre-bound 127.0.0.1 socket until the block ends."""
    settings = settings or ServerSettings()
    app = create_app(engine, settings, watcher)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=5,
        http=GuardedHttpToolsProtocol,  # as `engine serve` runs it
    )
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve(sockets=[sock]))
    for _ in range(500):
        if server.started:
            break
        await asyncio.sleep(0.01)
    try:
        yield Running(f"http://127.0.0.1:{port}", engine, app)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


@pytest.fixture
def standin() -> StandInEngine:
    return StandInEngine()


@pytest.fixture
async def server(standin: StandInEngine) -> AsyncIterator[Running]:
    async with serving(standin) as running:
        yield running


ServeFactory = Callable[..., contextlib.AbstractAsyncContextManager[Running]]

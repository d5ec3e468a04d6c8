"""`transport: aiohttp` in models.yaml: the provider's calls go over aiohttp, the others
keep the engine's own client; an unknown transport is a config error naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from engine import ConfigError, Engine
from engine.providers.aio import shared_aiohttp
from engine.providers.http import shared_client
from engine.testing.fakes import FakeOpenAI

HELLO = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 5}


def config(url: str, transport: str) -> tuple[dict[str, Any], dict[str, Any]]:
    models = {
        "providers": {
            "oa": {
                "protocol": "openai",
                "base_url": url,
                "api_key": "sk-test-key-1234567",
                "transport": transport,
            }
        },
        "models": {
            "oa/gpt-4o-mini": {
                "capabilities": ["chat", "streaming"],
                "context_window": 128000,
                "input_price": 0.15,
                "output_price": 0.6,
            }
        },
    }
    return models, {"main": {"candidates": ["oa/gpt-4o-mini"]}}


def origins_with(port: int) -> tuple[bool, bool]:
    """Whether the aiohttp transport, and the engine's client, hold a pool for `port`."""
    aio = any(f":{port}" in key for key in shared_aiohttp()._origins)
    engine = any(f":{port}" in key for key in shared_client()._pools)
    return aio, engine


@pytest.mark.parametrize("transport", ["aiohttp", "engine"])
async def test_the_configured_transport_carries_the_calls(transport: str) -> None:
    async with FakeOpenAI() as oa:
        eng = Engine.from_data(*config(oa.url, transport))
        try:
            answer = await eng.arun(HELLO, policy="main")
            streamed = [c async for c in eng.astream({**HELLO, "stream": True}, policy="main")]
            used = origins_with(oa.port)
            health = await eng.health(probe=True)
        finally:
            await eng.aclose()
    assert answer.provider == "oa" and answer.content
    assert "".join(c.content or "" for c in streamed) == answer.content
    assert used == ((True, False) if transport == "aiohttp" else (False, True))
    assert health["providers"]["oa"]["status"] == "healthy"
    assert len(oa.requests) == 2


def test_an_unknown_transport_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="transport"):
        Engine.from_data(*config("http://127.0.0.1:9/v1", "httpx"))

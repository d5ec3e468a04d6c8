"""Breaker openings shared through Redis: what one replica learns, the others use."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from engine import Engine
from engine.errors import EngineError
from engine.testing.fakes import FakeOpenAI, Fault
from engine.testing.servers import RedisServer

ROUTE = (
    "strategy: ordered\ncandidates: [up/gpt-4o-mini]\nretries: {max_retries: 0}\n"
    "breaker: {failures: 2, window_s: 60, cooldown_s: 30}\n"
)


def config(directory: Path, url: str) -> Path:
    (directory / "routes").mkdir(parents=True)
    (directory / "models.yaml").write_text(
        f"providers:\n  up: {{protocol: openai, base_url: '{url}', api_key: sk-up-key-000000000}}\n"
        "models:\n  up/gpt-4o-mini: {upstream: gpt-4o-mini, capabilities: [chat],"
        " context_window: 128000, max_output: 1000, input_price: 1.0, output_price: 2.0}\n"
    )
    (directory / "routes" / "chat.yaml").write_text(ROUTE)
    return directory


async def fail_twice(eng: Engine) -> None:
    for _ in range(2):
        with pytest.raises(EngineError):
            await eng.arun({"messages": [{"role": "user", "content": "hi"}]}, policy="chat")


async def test_an_opening_reaches_running_and_late_replicas(
    tmp_path: Path, redis_srv: RedisServer
) -> None:
    """Replica A opens its breaker after two failures; replica B (already running) and
    replica C (started afterwards) skip the provider without calling it."""
    client = aioredis.Redis.from_url(redis_srv.url)
    await client.flushdb()
    await client.aclose()
    async with FakeOpenAI() as upstream:
        cfg = config(tmp_path / "cfg", upstream.url)
        a, b = (Engine.from_config(cfg, state_url=redis_srv.url) for _ in range(2))
        try:
            ok = await b.arun({"messages": [{"role": "user", "content": "hi"}]}, policy="chat")
            assert ok.content  # B is running and listening
            upstream.script([Fault(status=500), Fault(status=500)])
            await fail_twice(a)
            assert len(upstream.requests) == 3
            await asyncio.sleep(0.3)  # the pub/sub message crosses
            with pytest.raises(EngineError) as skipped:
                await b.arun({"messages": [{"role": "user", "content": "hi"}]}, policy="chat")
            assert [t.outcome for t in skipped.value.attempts] == ["circuit_open"]
            c = Engine.from_config(cfg, state_url=redis_srv.url)
            try:
                with pytest.raises(EngineError) as late:
                    await c.arun({"messages": [{"role": "user", "content": "hi"}]}, policy="chat")
                assert [t.outcome for t in late.value.attempts] == ["circuit_open"]
            finally:
                await c.aclose()
            assert len(upstream.requests) == 3  # neither B nor C called the dead upstream
        finally:
            await a.aclose()
            await b.aclose()

"""Many engines, one truth: Engine.from_config with a Redis state URL and a Postgres ledger.

Three engines (as three replicas would be) over one real redis-server and one real
Postgres: a workspace budget holds across all of them, a cached answer from one is a hit
on another, and every answered call is in the shared ledger once.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from engine import BudgetExceededError, Engine
from engine.errors import ConfigError
from engine.state.postgres_ledger import TABLE
from engine.testing.servers import PostgresServer, RedisServer
from tests.acceptance.conftest import MOCK_MODELS, ask, write_config


@pytest.fixture
async def ledger_url(postgres_srv: PostgresServer) -> str:
    conn = await asyncpg.connect(postgres_srv.url)
    try:
        await conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
    finally:
        await conn.close()
    return postgres_srv.url


async def test_replicas_share_budget_cache_and_ledger(
    tmp_path: Path, redis_srv: RedisServer, ledger_url: str
) -> None:
    """A $0.01 daily budget spread over three replicas is never overspent, and each
    answered call is in the one ledger exactly once."""
    await _flush_redis(redis_srv)
    route = (
        "strategy: ordered\ncandidates: [mock/smart]\nbudget: {daily_usd: 0.01}\n"
        "cache: {enabled: true, ttl_s: 60}\n"
    )
    cfg = write_config(tmp_path / "cfg", MOCK_MODELS, {"default": route})
    engines = [
        Engine.from_config(cfg, state_url=redis_srv.url, ledger_url=ledger_url) for _ in range(3)
    ]
    answered, refused = [], 0
    by_replica: dict[int, Any] = {}  # replica index -> one answer it gave

    async def call(i: int) -> None:
        nonlocal refused
        try:
            r = await engines[i % 3].arun(ask(f"question {i}", metadata={"workspace": "acme"}))
        except BudgetExceededError:
            refused += 1
            return
        answered.append(r)
        by_replica.setdefault(i % 3, r)

    try:
        await asyncio.gather(*(call(i) for i in range(120)))
        spent = await engines[1].aspent("acme")
        # a question one replica answered, asked again on another (which replicas got
        # answers before the budget ran out depends on timing: not always replica 0)
        source, first = next(iter(by_replica.items()))
        asked = first.content.removeprefix("smart heard: ")
        other = engines[(source + 1) % 3]
        hit = await other.arun(ask(asked, metadata={"workspace": "acme"}))
        for eng in engines:
            await eng.aclose()
        total = sum(r.cost_usd or 0 for r in answered)
        assert refused > 0 and 0 < total <= 0.01
        assert spent["day"] == pytest.approx(total)
        assert hit.cached and hit.cost_usd == 0  # another replica's answer, not paid again
        conn = await asyncpg.connect(ledger_url)
        try:
            rows = await conn.fetchval(
                f"SELECT count(*) FROM {TABLE} WHERE outcome = 'ok' AND NOT cached"
            )
            cost = await conn.fetchval(f"SELECT coalesce(sum(cost_usd), 0) FROM {TABLE}")
        finally:
            await conn.close()
        assert rows == len(answered)
        assert cost == pytest.approx(total)
    finally:
        for eng in engines:
            await eng.aclose()


async def _flush_redis(server: RedisServer) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(server.url)
    await client.flushdb()
    await client.aclose()


def test_unknown_state_scheme_is_a_config_error(tmp_path: Path) -> None:
    """A state URL that is not Redis is refused at construction, without echoing the URL."""
    cfg = write_config(tmp_path / "cfg", MOCK_MODELS, {"default": "candidates: [mock/fast]\n"})
    with pytest.raises(ConfigError, match="state_url") as err:
        Engine.from_config(cfg, state_url="memcached://user:pw@host:1")
    assert "pw@" not in str(err.value)

"""The real Redis and Postgres the shared-state tests run against start, answer and stop."""

from __future__ import annotations

import asyncpg
import redis.asyncio as aioredis

from engine.testing.servers import postgres_server, redis_server


async def test_redis_server_answers_and_runs_lua() -> None:
    """A started redis-server answers PING and evaluates Lua (what the backends rely on)."""
    with redis_server() as server:
        client = aioredis.Redis.from_url(server.url)
        try:
            assert await client.ping()
            assert await client.eval("return ARGV[1] + 1", 0, 41) == 42
        finally:
            await client.aclose()


async def test_postgres_server_answers_sql() -> None:
    """A throwaway Postgres cluster accepts connections on its loopback port."""
    with postgres_server() as server:
        conn = await asyncpg.connect(server.url)
        try:
            assert await conn.fetchval("select 40 + 2") == 42
        finally:
            await conn.close()

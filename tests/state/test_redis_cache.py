"""RedisCache against a real redis-server: shared across replicas, TTL in Redis, fails open."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from engine.state.redis_cache import RedisCache
from engine.testing.clock import FakeClock
from engine.testing.servers import RedisServer, free_port


class JSONCodec:
    """The simplest codec: JSON text."""

    def encode(self, value: Any) -> bytes:
        return json.dumps(value).encode()

    def decode(self, data: bytes) -> Any:
        return json.loads(data)


async def test_one_replicas_put_is_anothers_hit(redis_srv: RedisServer, prefix: str) -> None:
    """What one replica stores, another reads; the counters say hit and miss."""
    a = RedisCache(redis_srv.url, JSONCodec(), FakeClock(), prefix=prefix)
    b = RedisCache(redis_srv.url, JSONCodec(), FakeClock(), prefix=prefix)
    try:
        assert await b.get("k") is None
        await a.put("k", {"answer": 42}, ttl_s=30)
        assert await b.get("k") == {"answer": 42}
        assert b.stats()["hits"] == 1 and b.stats()["misses"] == 1
    finally:
        await a.aclose()
        await b.aclose()


async def test_entries_expire_in_redis(redis_srv: RedisServer, prefix: str) -> None:
    """The entry's TTL is Redis's own: after it, no replica sees the value."""
    a = RedisCache(redis_srv.url, JSONCodec(), FakeClock(), prefix=prefix)
    b = RedisCache(redis_srv.url, JSONCodec(), FakeClock(), prefix=prefix)
    try:
        await a.put("k", "v", ttl_s=0.1)
        await asyncio.sleep(0.25)
        assert await b.get("k") is None
    finally:
        await a.aclose()
        await b.aclose()


async def test_clear_forgets_every_entry_of_the_prefix(redis_srv: RedisServer, prefix: str) -> None:
    """clear() removes this prefix's entries in Redis and locally, and no other prefix's."""
    mine = RedisCache(redis_srv.url, JSONCodec(), FakeClock(), prefix=prefix)
    other = RedisCache(redis_srv.url, JSONCodec(), FakeClock(), prefix=prefix + "x")
    try:
        await mine.put("k", 1, ttl_s=30)
        await other.put("k", 2, ttl_s=30)
        await mine.clear()
        assert await mine.get("k") is None
        assert await other.get("k") == 2
    finally:
        await mine.aclose()
        await other.aclose()


async def test_damaged_value_is_a_miss(redis_srv: RedisServer, prefix: str) -> None:
    """Bytes the codec cannot read (another version wrote them) are a miss, not an error."""
    cache = RedisCache(redis_srv.url, JSONCodec(), FakeClock(), prefix=prefix)
    try:
        await cache._redis.set(f"{prefix}:cache:k", b"\xff not json")
        assert await cache.get("k") is None
    finally:
        await cache.aclose()


async def test_unreachable_redis_fails_open() -> None:
    """With Redis down the cache is a miss and a local-only put, never an exception."""
    cache = RedisCache(f"redis://127.0.0.1:{free_port()}/0", JSONCodec(), FakeClock())
    try:
        assert await cache.get("k") is None
        await cache.put("k", 1, ttl_s=30)
        assert await cache.get("k") == 1  # served from the local copy
        assert cache.stats()["errors"] >= 2
    finally:
        await cache.aclose()

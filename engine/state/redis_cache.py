"""The response cache in Redis, shared by every replica, with a small local LRU in front.

Why both: Redis makes one replica's answer a hit on every other one; the local LRU keeps
a hot key from costing a network round trip on every call. The local copy lives at most
`local_ttl_s` (default one second) and never longer than the entry's own TTL, so an
entry cleared in Redis stops being served everywhere within that second.

Values cross the network as JSON through a `Codec` the composition root supplies (the
Response codec), never pickle: a value read from a shared store must not be able to run
code. A cache is an optimisation, so when Redis cannot be reached it fails open (a miss,
a put that stores only locally) with a warning and a counter, never an error to the call.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from engine.clock import Clock
from engine.state.cache import LRUCache
from engine.state.redis_common import connect

log = logging.getLogger(__name__)

#: How long a value read from Redis is served from this replica's memory at most.
LOCAL_TTL_S = 1.0


class Codec(Protocol):
    """Turns cached values into bytes and back (JSON, never pickle)."""

    def encode(self, value: Any) -> bytes: ...

    def decode(self, data: bytes) -> Any: ...


class RedisCache:
    """`ResponseCache` on Redis (`SET key value PX ttl`), a local LRU in front."""

    def __init__(
        self,
        url: str,
        codec: Codec,
        clock: Clock,
        *,
        local_entries: int = 256,
        local_ttl_s: float = LOCAL_TTL_S,
        prefix: str = "engine",
        client: Any = None,
    ) -> None:
        self._redis: aioredis.Redis = client if client is not None else connect(url)
        self._codec = codec
        self._local = LRUCache(local_entries, clock)
        self._local_ttl_s = local_ttl_s
        self._prefix = f"{prefix}:cache:"
        self._counts = {"hits": 0, "misses": 0, "errors": 0}

    def __repr__(self) -> str:  # never the URL: it may carry a password
        return f"RedisCache(prefix={self._prefix!r})"

    async def get(self, key: str) -> Any | None:
        value = await self._local.get(key)
        if value is not None:
            self._counts["hits"] += 1
            return value
        try:
            data = await self._redis.get(self._prefix + key)
            ttl_ms = await self._redis.pttl(self._prefix + key) if data is not None else -2
        except (RedisError, OSError) as exc:
            self._failed("get", exc)
            return None
        if data is None:
            self._counts["misses"] += 1
            return None
        value = self._decode(data if isinstance(data, bytes) else data.encode())
        if value is None:
            return None
        self._counts["hits"] += 1
        await self._local.put(key, value, min(self._local_ttl_s, max(ttl_ms, 0) / 1000))
        return value

    def _decode(self, data: bytes) -> Any | None:
        try:
            return self._codec.decode(data)
        except ValueError:  # written by another version, or damaged: a miss, not an error
            self._counts["misses"] += 1
            return None

    async def put(self, key: str, value: Any, ttl_s: float) -> None:
        if ttl_s <= 0:
            return
        await self._local.put(key, value, min(self._local_ttl_s, ttl_s))
        try:
            await self._redis.set(
                self._prefix + key, self._codec.encode(value), px=int(ttl_s * 1000)
            )
        except (RedisError, OSError) as exc:
            self._failed("put", exc)

    async def clear(self) -> None:
        """Forget every entry, here and in Redis (this prefix only)."""
        await self._local.clear()
        try:
            async for name in self._redis.scan_iter(match=self._prefix + "*", count=500):
                await self._redis.unlink(name)
        except (RedisError, OSError) as exc:
            self._failed("clear", exc)

    def _failed(self, what: str, exc: BaseException) -> None:
        self._counts["errors"] += 1
        log.warning("Redis cache %s failed (%s); serving without it", what, type(exc).__name__)

    def stats(self) -> Mapping[str, int]:
        local = self._local.stats()
        return {**self._counts, "size": int(local.get("size", 0))}

    def resize(self, max_entries: int) -> None:
        """Redis is bounded by TTLs and its own memory policy; the local LRU keeps its size."""

    async def aclose(self) -> None:
        await self._redis.aclose()

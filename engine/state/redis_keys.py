"""Run-time client keys in Redis (`KeyRegistry`), for replicas on several hosts.

Two hashes under one hash tag (one slot, so it works on Redis Cluster): records by id, and
ids by digest. A lookup and a write are one script each, so a rotation (old digest out,
new digest in) is never half seen. When Redis cannot be reached a lookup fails closed: the
caller answers 503 naming the store, and no key is accepted unchecked.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from engine.errors import RoutingError
from engine.state.keys import KeyRecord
from engine.state.redis_common import connect, tag, unreachable

# KEYS: records, digests. ARGV: digest, id ('' for none) -> {record by digest, record by id}
_LOOKUP = """
local id = redis.call('HGET', KEYS[2], ARGV[1])
local a = false
if id then a = redis.call('HGET', KEYS[1], id) end
local b = false
if ARGV[2] ~= '' then b = redis.call('HGET', KEYS[1], ARGV[2]) end
return {a or '', b or ''}
"""

# KEYS: records, digests. ARGV: id, digest ('' when revoked), record json.
_PUT = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old then
  local was = cjson.decode(old)['digest']
  if was and was ~= '' then redis.call('HDEL', KEYS[2], was) end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
if ARGV[2] ~= '' then redis.call('HSET', KEYS[2], ARGV[2], ARGV[1]) end
return 1
"""


class RedisKeyRegistry:
    """`KeyRegistry` on Redis: every replica sees an added, rotated or revoked key at once."""

    def __init__(self, url: str, *, prefix: str = "engine", client: Any = None) -> None:
        self._redis: aioredis.Redis = client if client is not None else connect(url)
        base = f"{prefix}:keys:{tag('keys')}"
        self._keys = [f"{base}:records", f"{base}:digests"]
        self._lookup = self._redis.register_script(_LOOKUP)
        self._put = self._redis.register_script(_PUT)

    def __repr__(self) -> str:  # never the URL: it may carry a password
        return "RedisKeyRegistry()"

    async def lookup(
        self, key_digest: str, key_id: str | None
    ) -> tuple[KeyRecord | None, KeyRecord | None]:
        try:
            found, by_id = await self._lookup(keys=self._keys, args=[key_digest, key_id or ""])
        except (RedisError, OSError) as exc:
            raise _unreachable(exc) from None
        active = KeyRecord.from_json(found) if found else None
        if active is not None and (active.revoked or active.digest != key_digest):
            active = None
        return active, (KeyRecord.from_json(by_id) if by_id else None)

    async def get(self, key_id: str) -> KeyRecord | None:
        try:
            text = await self._redis.hget(self._keys[0], key_id)
        except (RedisError, OSError) as exc:
            raise _unreachable(exc) from None
        return KeyRecord.from_json(text) if text else None

    async def put(self, record: KeyRecord) -> None:
        try:
            await self._put(keys=self._keys, args=[record.id, record.digest, record.to_json()])
        except (RedisError, OSError) as exc:
            raise _unreachable(exc) from None

    async def all(self) -> list[KeyRecord]:
        try:
            texts = await self._redis.hvals(self._keys[0])
        except (RedisError, OSError) as exc:
            raise _unreachable(exc) from None
        return sorted((KeyRecord.from_json(t) for t in texts), key=lambda r: r.id)

    async def active(self) -> bool:
        try:
            return bool(await self._redis.hlen(self._keys[1]))
        except (RedisError, OSError) as exc:
            raise _unreachable(exc) from None

    async def aclose(self) -> None:
        await self._redis.aclose()


def _unreachable(exc: BaseException) -> RoutingError:
    return unreachable("the Redis key registry", exc)

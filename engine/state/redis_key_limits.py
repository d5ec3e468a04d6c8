"""Per-client-key limits in Redis (`KeyLimiter`): one window for every worker and replica.

One script checks and books a request against the key's concurrency, requests-per-minute
and tokens-per-minute together, on the Redis server's clock, so replicas never admit more
than the limit between them. A request's in-flight slot holds at most `hold_s` (the
longest call plus a margin): a replica killed mid-call gives its slots back by itself.
Keys of one client key share a hash tag (one slot: works on Redis Cluster).

When Redis cannot be reached the request fails closed with a RoutingError naming the store
(503), as budgets do: a limit nobody can check is not enforced by letting everything pass.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from engine.state.key_limits import WINDOW_S, KeyLimitedError, KeyLimits, Ticket
from engine.state.redis_common import connect, tag, unreachable

# KEYS: requests (zset token -> ms), tokens (hash token -> n, plus the running sum under
# `_sum`), in flight (zset token -> expiry ms), seq. ARGV: rpm, tpm, concurrency (-1: none),
# tokens, window ms, hold ms. -> {token or 0, refused limit, retry after ms}
# The tokens in the window are a running sum kept in the same hash (so it expires with the
# entries it sums): each entry is added once and subtracted once when it leaves, where the
# script used to add up the whole window (HVALS) on every request, O(requests per minute).
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window, ttl = tonumber(ARGV[5]), tonumber(ARGV[5]) + tonumber(ARGV[6])
local used, changed = redis.call('HGET', KEYS[2], '_sum'), false
if used then
  used = tonumber(used)
else  -- written before the running sum existed (or nothing yet): add the window up once
  used, changed = 0, true
  for _, v in ipairs(redis.call('HVALS', KEYS[2])) do used = used + tonumber(v) end
end
for _, tok in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - window)) do
  local n = redis.call('HGET', KEYS[2], tok)
  if n then
    used, changed = used - tonumber(n), true
    redis.call('HDEL', KEYS[2], tok)
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
local function refuse(limit, wait)
  if changed then
    redis.call('HSET', KEYS[2], '_sum', used)
    for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ttl) end
  end
  return {0, limit, wait}
end
local conc, rpm, tpm = tonumber(ARGV[3]), tonumber(ARGV[1]), tonumber(ARGV[2])
if conc >= 0 and redis.call('ZCARD', KEYS[3]) >= conc then
  return refuse('max_concurrent', 1000)
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local wait = window
if first[2] then wait = tonumber(first[2]) + window - now end
if rpm >= 0 and redis.call('ZCARD', KEYS[1]) >= rpm then return refuse('rpm', wait) end
if tpm >= 0 and used > 0 and used + tonumber(ARGV[4]) > tpm then return refuse('tpm', wait) end
local tok = redis.call('INCR', KEYS[4])
redis.call('ZADD', KEYS[1], now, tok)
redis.call('HSET', KEYS[2], tok, ARGV[4], '_sum', used + tonumber(ARGV[4]))
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[6]), tok)
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ttl) end
return {tok, '', 0}
"""

# KEYS: requests, tokens, in flight. ARGV: token, real tokens.
_DONE = """
if redis.call('ZREM', KEYS[3], ARGV[1]) == 0 then return 0 end
local booked = redis.call('HGET', KEYS[2], ARGV[1])
if booked and redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
  if redis.call('HEXISTS', KEYS[2], '_sum') == 1 then
    redis.call('HINCRBY', KEYS[2], '_sum', tonumber(ARGV[2]) - tonumber(booked))
  end
end
return 1
"""


class RedisKeyLimiter:
    """`KeyLimiter` on Redis, shared by every replica pointing at the same server."""

    def __init__(
        self, url: str, *, hold_s: float = 600.0, prefix: str = "engine", client: Any = None
    ) -> None:
        self._redis: aioredis.Redis = client if client is not None else connect(url)
        self._prefix = prefix
        self._hold_ms = max(1, int(hold_s * 1000))
        self._admit = self._redis.register_script(_ADMIT)
        self._done = self._redis.register_script(_DONE)

    def __repr__(self) -> str:  # never the URL: it may carry a password
        return f"RedisKeyLimiter(prefix={self._prefix!r})"

    def _keys(self, key_id: str) -> list[str]:
        base = f"{self._prefix}:keylimit:{tag(key_id)}"
        return [f"{base}:req", f"{base}:tok", f"{base}:flight", f"{base}:seq"]

    async def admit(self, key_id: str, limits: KeyLimits, tokens: int) -> Ticket:
        args = [-1 if v is None else v for v in (limits.rpm, limits.tpm, limits.max_concurrent)]
        try:
            token, refused, wait_ms = await self._admit(
                keys=self._keys(key_id),
                args=[*args, max(0, tokens), int(WINDOW_S * 1000), self._hold_ms],
            )
        except (RedisError, OSError) as exc:
            raise unreachable("the Redis key limiter", exc) from None
        if int(token) == 0:
            raise KeyLimitedError(key_id, refused.decode(), int(wait_ms) / 1000)
        return Ticket(key_id, str(int(token)), tokens)

    async def done(self, ticket: Ticket, tokens: int) -> None:
        try:
            await self._done(keys=self._keys(ticket.key_id)[:3], args=[ticket.token, tokens])
        except (RedisError, OSError):  # the slot expires after hold_s by itself
            return

    async def aclose(self) -> None:
        await self._redis.aclose()

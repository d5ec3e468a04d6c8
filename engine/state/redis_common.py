"""What every Redis backend shares: one way to connect, one way to name a key's slot.

Connections time out quickly (a shared store that hangs would hang every call), and keys of
one owner (a workspace, a provider) carry one hash tag, so every script touches one slot
and works on Redis Cluster. The URL is never logged or repr'd: it may carry a password.
"""

from __future__ import annotations

import redis.asyncio as aioredis

#: Seconds to connect, to wait for one answer, and to wait for a free pooled connection
#: before a store counts as unreachable.
CONNECT_TIMEOUT_S = 2.0
ANSWER_TIMEOUT_S = 5.0
POOL_WAIT_S = 5.0
#: Connections per process: a burst of calls queues for these instead of opening hundreds.
MAX_CONNECTIONS = 32


def connect(url: str) -> aioredis.Redis:
    """A client for `url` (redis:// or rediss://, Valkey too) with bounded waits."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        timeout=POOL_WAIT_S,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_timeout=ANSWER_TIMEOUT_S,
        health_check_interval=30,
    )
    return aioredis.Redis.from_pool(pool)  # the client owns (and closes) its pool


def tag(name: str) -> str:
    """`{name}` as a Redis Cluster hash tag, with braces escaped so a name cannot break it."""
    escaped = name.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")
    return "{" + escaped + "}"

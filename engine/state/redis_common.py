"""What every Redis backend shares: one way to connect, one way to name a key's slot.

Connections time out quickly (a shared store that hangs would hang every call), and keys of
one owner (a workspace, a provider) carry one hash tag, so every script touches one slot
and works on Redis Cluster. The URL is never logged or repr'd: it may carry a password.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

import redis.asyncio as aioredis

from engine.errors import RoutingError

K = TypeVar("K", bound=Hashable)

#: Seconds to connect, to wait for one answer, and to wait for a free pooled connection
#: before a store counts as unreachable.
CONNECT_TIMEOUT_S = 2.0
ANSWER_TIMEOUT_S = 5.0
POOL_WAIT_S = 5.0
#: Connections per process: a burst of calls queues for these instead of opening hundreds.
MAX_CONNECTIONS = 32
#: Owners whose key names a store keeps before it starts over (plans and workspaces come
#: and go).
NAMES_MAX = 4096


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


def unreachable(store: str, exc: BaseException) -> RoutingError:
    """What a call gets when `store` cannot be reached: the server's 503 naming the store
    (never its URL) and the kind of failure."""
    return RoutingError(f"{store} is unreachable ({type(exc).__name__})")


class KeyNames(Generic[K]):
    """An owner's Redis key names, built once by `build` and kept for the next call (a hash
    tag and an f-string per key on every call otherwise); bounded by NAMES_MAX."""

    def __init__(self, build: Callable[[K], tuple[str, ...]]) -> None:
        self._build = build
        self._names: dict[K, tuple[str, ...]] = {}

    def __call__(self, owner: K) -> tuple[str, ...]:
        names = self._names.get(owner)
        if names is None:
            if len(self._names) > NAMES_MAX:
                self._names.clear()
            names = self._names[owner] = self._build(owner)
        return names


def packed(*numbers: float) -> bytes:
    """A script's numbers as one argument: little-endian doubles (exact for integers below
    2**53, as Lua's numbers are), unpacked in the script by one `struct.unpack` at C speed.
    Each ARGV entry costs a script ~1.2k instructions of redis-server and each `tonumber`
    ~1.7-2.1k (callgrind, docs/state.md)."""
    return struct.pack(f"<{len(numbers)}d", *numbers)

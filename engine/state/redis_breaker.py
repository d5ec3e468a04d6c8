"""Breaker openings shared through Redis: one replica finds a provider dead, all skip it.

An opening is a key `<prefix>:breaker:<name>` that expires with the cooldown (so a replica
that starts later still sees the openings in force) and a message on one pub/sub channel
(so running replicas hear it at once). Each replica keeps its own breakers and treats a
heard opening as its own breaker opening for the time left; its own openings are not
echoed back to it. A lost message costs only what it did before: that replica finds out
by itself. Publishing never delays a call (it runs in the background).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from engine.state.redis_common import connect

log = logging.getLogger(__name__)


class RedisBreakerSignal:
    """`BreakerSignal` on Redis: expiring keys for late joiners, pub/sub for the rest."""

    def __init__(self, url: str, *, prefix: str = "engine", client: Any = None) -> None:
        self._redis: aioredis.Redis = client if client is not None else connect(url)
        self._prefix = f"{prefix}:breaker:"
        self._channel = f"{prefix}:breakers"
        self._origin = uuid.uuid4().hex  # our own messages are not news to us
        self._listener: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Future[None]] = set()

    def __repr__(self) -> str:  # never the URL: it may carry a password
        return f"RedisBreakerSignal(prefix={self._prefix!r})"

    async def start(self, on_open: Callable[[str, float], None]) -> None:
        """Read the openings in force, then listen for new ones."""
        try:
            async for name in self._redis.scan_iter(match=self._prefix + "*", count=200):
                left_ms = await self._redis.pttl(name)
                if left_ms > 0:
                    on_open(_text(name)[len(self._prefix) :], left_ms / 1000)
        except (RedisError, OSError) as exc:
            log.warning("breaker signal: cannot read openings (%s)", type(exc).__name__)
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self._channel)
        except (RedisError, OSError) as exc:
            log.warning("breaker signal: cannot subscribe (%s)", type(exc).__name__)
            return
        self._listener = asyncio.ensure_future(self._listen(pubsub, on_open))

    async def _listen(self, pubsub: Any, on_open: Callable[[str, float], None]) -> None:
        try:
            async for message in pubsub.listen():
                origin, _, rest = _text(message["data"]).partition("\t")
                seconds, _, key = rest.partition("\t")
                if origin != self._origin and key:
                    on_open(key, float(seconds))
        except Exception as exc:  # a background listener must end, not crash the close
            # Besides RedisError/OSError, redis-py's retry of a lost pubsub connection can
            # raise AttributeError (its writer is gone): any end is logged and the engine
            # goes on with local breakers.
            log.warning("breaker signal: stopped listening (%s)", type(exc).__name__)
        finally:
            # redis-py's close of a connection it already lost can fail with AttributeError
            # (its writer is gone); a listener that stopped must not fail the engine's close.
            with contextlib.suppress(RedisError, OSError, AttributeError):
                await pubsub.aclose()

    def publish(self, key: str, cooldown_s: float) -> None:
        """Store the opening with its cooldown and announce it (in the background)."""
        task = asyncio.ensure_future(self._publish(key, cooldown_s))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _publish(self, key: str, cooldown_s: float) -> None:
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.set(self._prefix + key, "1", px=max(1, int(cooldown_s * 1000)))
            pipe.publish(self._channel, f"{self._origin}\t{cooldown_s}\t{key}")
            await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("breaker signal: cannot publish (%s)", type(exc).__name__)

    async def aclose(self) -> None:
        if self._pending:
            await asyncio.gather(*list(self._pending))
        if self._listener is not None:
            listener, self._listener = self._listener, None
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
        await self._redis.aclose()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

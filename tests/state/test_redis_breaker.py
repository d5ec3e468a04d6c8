"""The Redis breaker signal's listener ends quietly when Redis goes away (engine/state/
redis_breaker.py): a lost connection is logged, and closing the engine afterwards does not
fail even when redis-py's own close of the lost connection raises (it did, under load, in
the replicas acceptance test: AttributeError from a connection whose writer was gone)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from engine.state.redis_breaker import RedisBreakerSignal


class _LostPubSub:
    closed = False

    async def listen(self) -> AsyncIterator[dict[str, Any]]:
        raise RedisConnectionError("Connection closed by server.")
        yield {}  # an async generator, as redis-py's

    async def aclose(self) -> None:
        self.closed = True
        raise AttributeError("'NoneType' object has no attribute 'writelines'")


class _Client:
    async def aclose(self) -> None:
        pass


class _RetriedPubSub(_LostPubSub):
    """redis-py's retry of a lost pubsub read reconnects through a writer that is gone."""

    async def listen(self) -> AsyncIterator[dict[str, Any]]:
        raise AttributeError("'NoneType' object has no attribute 'writelines'")
        yield {}


@pytest.mark.parametrize(
    ("pubsub", "ended_by"),
    [(_LostPubSub(), "ConnectionError"), (_RetriedPubSub(), "AttributeError")],
    ids=["connection-lost", "redis-py-retry-error"],
)
async def test_an_ended_listener_is_logged_and_closing_afterwards_does_not_fail(
    pubsub: _LostPubSub, ended_by: str, caplog: pytest.LogCaptureFixture
) -> None:
    signal = RedisBreakerSignal("redis://unused", client=_Client())
    signal._listener = asyncio.ensure_future(signal._listen(pubsub, lambda key, s: None))
    await asyncio.sleep(0)
    await signal.aclose()
    await signal.aclose()  # an engine closed twice (as the acceptance test does) stays quiet
    assert pubsub.closed
    assert f"stopped listening ({ended_by})" in caplog.text

"""The pipelined script connection against a real redis-server: answers matched to their
callers, scripts reloaded after a flush, credentials and db from the URL, errors as
redis-py's classes, and a dropped connection reopened."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from engine.state.redis_scripts import RedisPyScripts, ScriptConnection, scripts_for
from engine.testing.servers import RedisServer, free_port

ECHO = "return ARGV[1]"
SET = "redis.call('SET', KEYS[1], ARGV[1]) return redis.call('GET', KEYS[1])"


async def test_concurrent_calls_each_get_their_own_answer(redis_srv: RedisServer) -> None:
    conn = ScriptConnection(redis_srv.url)
    echo = conn.register(ECHO)
    try:
        answers = await asyncio.gather(*(echo(keys=[], args=[f"n{i}"]) for i in range(300)))
        assert answers == [f"n{i}".encode() for i in range(300)]
    finally:
        await conn.aclose()


async def test_a_script_flushed_from_the_server_is_loaded_again(redis_srv: RedisServer) -> None:
    conn = ScriptConnection(redis_srv.url)
    echo = conn.register(ECHO)
    admin = aioredis.Redis.from_url(redis_srv.url)
    try:
        assert await echo(args=["a"]) == b"a"
        await admin.script_flush()
        assert await echo(args=["b"]) == b"b"  # NOSCRIPT answered by EVAL
        assert await echo(args=["c"]) == b"c"
    finally:
        await conn.aclose()
        await admin.aclose()


async def test_user_password_and_db_come_from_the_url(redis_srv: RedisServer) -> None:
    admin = aioredis.Redis.from_url(redis_srv.url)
    await admin.execute_command("ACL", "SETUSER", "scripter", "on", ">s3cret-pw", "~*", "+@all")
    url = f"redis://scripter:s3cret-pw@127.0.0.1:{redis_srv.port}/3"
    conn = ScriptConnection(url)
    try:
        assert "s3cret" not in repr(conn)
        assert await conn.register(SET)(keys=["k:scripts"], args=["v"]) == b"v"
        in_db3 = aioredis.Redis.from_url(f"redis://127.0.0.1:{redis_srv.port}/3")
        assert await in_db3.get("k:scripts") == b"v"
        assert await admin.get("k:scripts") is None  # db 0 untouched
        await in_db3.aclose()
    finally:
        await conn.aclose()
        await admin.execute_command("ACL", "DELUSER", "scripter")
        await admin.aclose()


async def test_a_wrong_password_is_a_connection_error_without_the_password(
    redis_srv: RedisServer,
) -> None:
    conn = ScriptConnection(f"redis://nobody:wrong-pw-123@127.0.0.1:{redis_srv.port}/0")
    with pytest.raises(RedisConnectionError) as caught:
        await conn.register(ECHO)(args=["x"])
    assert "wrong-pw-123" not in str(caught.value)


async def test_a_lua_error_is_a_response_error(redis_srv: RedisServer) -> None:
    conn = ScriptConnection(redis_srv.url)
    try:
        with pytest.raises(ResponseError):
            await conn.register("return redis.call('NOSUCHCOMMAND')")()
        assert await conn.register(ECHO)(args=["after"]) == b"after"  # still in step
    finally:
        await conn.aclose()


async def test_no_server_is_a_connection_error() -> None:
    conn = ScriptConnection(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(RedisConnectionError):
        await conn.register(ECHO)(args=["x"])


async def test_a_connection_the_server_drops_is_reopened(redis_srv: RedisServer) -> None:
    conn = ScriptConnection(redis_srv.url)
    echo = conn.register(ECHO)
    admin = aioredis.Redis.from_url(redis_srv.url)
    try:
        assert await echo(args=["before"]) == b"before"
        await admin.client_kill_filter(_type="normal", skipme=True)
        for _ in range(50):  # the loss is noticed when the socket says so
            try:
                assert await echo(args=["after"]) == b"after"
                break
            except RedisError:
                await asyncio.sleep(0.01)
        else:
            pytest.fail("the connection was never reopened")
    finally:
        await conn.aclose()
        await admin.aclose()


def test_tls_and_given_clients_go_through_redis_py(redis_srv: RedisServer) -> None:
    client = aioredis.Redis.from_url(redis_srv.url)
    assert isinstance(scripts_for(redis_srv.url, client, given=False), ScriptConnection)
    assert isinstance(scripts_for(redis_srv.url, client, given=True), RedisPyScripts)
    tls = "rediss://127.0.0.1:6380/0"
    assert isinstance(scripts_for(tls, client, given=False), RedisPyScripts)


async def test_a_server_that_never_answers_times_out_and_the_connection_is_dropped() -> None:
    """One timer per connection stands for every command's answer timeout: the oldest
    unanswered command fails every command behind it, and the next call connects again."""
    accepted: list[asyncio.StreamWriter] = []

    async def mute(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # reads nothing, answers nothing

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    conn = ScriptConnection(f"redis://127.0.0.1:{port}/0", answer_timeout_s=0.05)
    echo = conn.register(ECHO)
    try:
        calls = [asyncio.ensure_future(echo(args=[str(i)])) for i in range(3)]
        for outcome in await asyncio.gather(*calls, return_exceptions=True):
            assert isinstance(outcome, RedisTimeoutError)
        with pytest.raises(RedisTimeoutError):
            await echo(args=["again"])
        assert len(accepted) == 2  # the timed-out connection was not reused
    finally:
        await conn.aclose()
        server.close()
        for writer in accepted:
            writer.close()


async def test_a_lone_awaited_command_leaves_at_once_the_rest_together(
    redis_srv: RedisServer,
) -> None:
    """A command awaited while no other awaited reply is outstanding is written before its
    caller goes on (Redis works on it meanwhile); the others issued in that turn leave in
    one write at its end. A command nobody awaits (`written`) leaves at once and does not
    hold up the next awaited one."""
    conn = ScriptConnection(redis_srv.url)
    echo = conn.register(ECHO)
    try:
        await echo(keys=[], args=["open"])
        wire = conn.open_wire()
        assert wire is not None and wire.transport is not None
        await asyncio.sleep(0)  # a new turn
        writes: list[bytes] = []
        real = wire.transport.write
        wire.transport.write = lambda data: (writes.append(bytes(data)), real(data))[1]  # type: ignore[method-assign]
        first = echo(keys=[], args=["a"])
        assert len(writes) == 1  # before this coroutine yielded
        rest = [echo(keys=[], args=["b"]), echo(keys=[], args=["c"])]
        assert len(writes) == 1
        assert await asyncio.gather(first, *rest) == [b"a", b"b", b"c"]
        assert len(writes) == 2 and writes[1].count(b"EVALSHA") == 2
        await asyncio.sleep(0)
        unawaited = echo.written(keys=[], args=["d"])
        awaited = echo(keys=[], args=["e"])
        assert len(writes) == 4  # both at once: the first did not open the turn
        assert unawaited is not None and await unawaited == b"d" and await awaited == b"e"
    finally:
        await conn.aclose()

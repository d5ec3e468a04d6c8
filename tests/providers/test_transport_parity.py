"""The fixes of issue 14 hold on both transports (the engine's client and aiohttp):
a POST the upstream read is never re-sent, waiting for a pooled connection is not a
first-token timeout, and a black-holed first address costs 250 ms, not the connect
timeout."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from engine.errors import UnavailableError
from engine.providers.aio import AiohttpClient
from engine.providers.http import HttpClient
from engine.providers.outcomes import Transport

from .test_transport_bounds import STREAM, black_hole, two_addresses
from .wire import Upstream, answering, endpoint, ok, serve

CLIENTS: dict[str, Callable[[], Transport]] = {"engine": HttpClient, "aiohttp": AiohttpClient}


@pytest.fixture(params=list(CLIENTS))
async def client(request: pytest.FixtureRequest) -> Any:
    made = CLIENTS[request.param]()
    yield made
    await made.aclose()


async def test_a_read_post_is_not_sent_again(client: Transport) -> None:
    async def script(up: Upstream, reader: Any, writer: Any, n: int) -> None:
        count = 0
        while await up.read_request(reader) is not None:
            count += 1
            if n == 0 and count == 2:
                return  # read, then closed without an answer
            writer.write(ok())
            await writer.drain()

    async with serve(script) as up:
        ep = endpoint(up.url)
        assert (await client.post(ep, f"{up.url}/chat", {}, b"{}")).status == 200
        with pytest.raises(UnavailableError):
            await client.post(ep, f"{up.url}/chat", {}, b"{}")
    assert len(up.requests) == 2


async def test_pool_waits_are_not_first_token_timeouts(client: Transport) -> None:
    async with serve(answering(STREAM)) as up:
        ep = endpoint(up.url, total_s=10, first_token_s=0.2, pool_size=2)

        async def one() -> int:
            reply = await client.open_stream(ep, f"{up.url}/chat", {}, b"{}")
            lines = 0
            async for _ in reply.lines():
                lines += 1
                await asyncio.sleep(0.05)
            reply.close()
            return lines

        results = await asyncio.gather(*(one() for _ in range(6)), return_exceptions=True)
    assert results == [6] * 6


async def test_happy_eyeballs(client: Transport, monkeypatch: pytest.MonkeyPatch) -> None:
    with black_hole() as hole:
        async with (
            serve(answering(ok())) as up,
            two_addresses(monkeypatch, "dual.test", hole, ("127.0.0.1", up.port)),
        ):
            url = f"http://dual.test:{up.port}/v1"
            reply = await client.post(endpoint(url, connect_s=2), f"{url}/chat", {}, b"{}")
    assert reply.status == 200

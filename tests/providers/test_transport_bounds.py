"""The engine's HTTP client where upstreams misbehave: each test reproduces one finding of
issue 14 on loopback and pins the fixed behaviour.

Interim 1xx answers, an endless header (or trailer), thousands of header lines, a stale
idle connection whose close the event loop has not delivered yet, pool waits against the
first-token deadline, and a black-holed first address (Happy Eyeballs).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from engine.errors import ProtocolError, ProviderTimeoutError
from engine.providers import proxy
from engine.providers.http import HttpClient

from .wire import Upstream, answering, endpoint, ok, serve


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    proxy.route.cache_clear()
    yield
    proxy.route.cache_clear()


async def post(client: HttpClient, up: Upstream, **kw: Any) -> tuple[int, bytes]:
    reply = await client.post(endpoint(up.url, **kw), f"{up.url}/chat/completions", {}, b"{}")
    return reply.status, reply.body


# ------------------------------------------------------------------------- interim answers

INTERIM = (
    b"HTTP/1.1 100 Continue\r\n\r\n"
    b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
)


async def test_interim_answers_are_skipped() -> None:
    """100 Continue and 103 Early Hints precede the real answer; they are not the answer."""
    client = HttpClient()
    async with serve(answering(INTERIM + ok())) as up:
        reply = await client.post(endpoint(up.url), f"{up.url}/chat/completions", {}, b"{}")
        assert (reply.status, reply.body) == (200, b'{"ok":true}')
        assert "Link" not in reply.headers and reply.headers["Content-Type"] == "application/json"
        assert await post(client, up) == (200, b'{"ok":true}')  # the connection is still sane
        await client.aclose()
    assert up.connections == 1


async def test_interim_answers_before_a_stream_are_skipped() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 13\r\n\r\n"
    client = HttpClient()
    async with serve(answering(INTERIM + head + b"data: 1\n\ndone")) as up:
        reply = await client.open_stream(endpoint(up.url), f"{up.url}/chat", {}, b"{}")
        assert reply.status == 200
        assert [line async for line in reply.lines()] == [b"data: 1", b"", b"done"]
        reply.close()
        await client.aclose()


# ----------------------------------------------------------------------- bounded answer heads

SENT_AT_MOST = 16 * 1024 * 1024


def endless(prefix: bytes, sent: list[int]):  # type: ignore[no-untyped-def]
    """A script that starts an answer with `prefix`, then streams one header line forever
    (up to 16 MB), counting what it managed to send before the client hung up."""

    async def script(up: Upstream, reader: Any, writer: Any, n: int) -> None:
        await up.read_request(reader)
        writer.write(prefix)
        sent.append(0)
        while sent[-1] < SENT_AT_MOST:
            writer.write(b"a" * 65536)
            await writer.drain()
            sent[-1] += 65536
        await asyncio.sleep(30)

    return script


async def test_an_endless_header_fails_fast_as_a_protocol_error() -> None:
    sent: list[int] = []
    client = HttpClient()
    async with serve(endless(b"HTTP/1.1 200 OK\r\nX-Endless: ", sent)) as up:
        with pytest.raises(ProtocolError, match="head larger than 128 KiB"):
            await post(client, up, total_s=3)
        await client.aclose()
    assert sent[0] < SENT_AT_MOST  # the client hung up instead of buffering it all


async def test_an_endless_trailer_fails_fast_as_a_protocol_error() -> None:
    sent: list[int] = []
    start = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nX-Trailer: "
    client = HttpClient()
    async with serve(endless(start, sent)) as up:
        with pytest.raises(ProtocolError, match="head larger"):
            await post(client, up, total_s=3)
        await client.aclose()
    assert sent[0] < SENT_AT_MOST


async def test_ten_thousand_header_lines_are_refused() -> None:
    many = b"".join(b"X-H%d: 1\r\n" % i for i in range(10_000))
    answer = b"HTTP/1.1 200 OK\r\n" + many + b"Content-Length: 2\r\n\r\n{}"
    client = HttpClient()
    async with serve(answering(answer)) as up:
        with pytest.raises(ProtocolError, match="more than 256 header lines"):
            await post(client, up)
        await client.aclose()


async def test_ordinary_large_answers_and_trailers_pass() -> None:
    """The bound is on the head, not the body: a 2 MB body in small chunks and a trailer."""
    body = b"x" * (2 * 1024 * 1024)
    chunks = b"".join(b"400\r\n%s\r\n" % body[i : i + 1024] for i in range(0, len(body), 1024))
    answer = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunks
        + b"0\r\nX-Checksum: 1\r\n\r\n"
    )
    client = HttpClient()
    async with serve(answering(answer)) as up:
        assert await post(client, up) == (200, body)
        await client.aclose()


# ----------------------------------------------------------------- stale idle connections


async def test_an_idle_connection_closed_by_the_upstream_is_not_written_to() -> None:
    """The upstream closed the idle connection but the event loop has not delivered the
    close yet (reading is paused here to hold it back): the socket is polled before reuse,
    so the request goes out once, on a new connection."""
    closed = asyncio.Event()

    async def script(up: Upstream, reader: Any, writer: Any, n: int) -> None:
        await up.read_request(reader)
        writer.write(ok())
        await writer.drain()
        if n == 0:
            await asyncio.sleep(0.05)
            writer.close()
            closed.set()
            return
        while await up.read_request(reader) is not None:
            writer.write(ok())

    client = HttpClient()
    async with serve(script) as up:
        assert (await post(client, up))[0] == 200
        (pool,) = [pool for _, pool in client._pools.values()]
        idle = pool._idle[0]
        idle._transport.pause_reading()  # type: ignore[union-attr]
        await closed.wait()
        await asyncio.sleep(0.05)  # the FIN is in the socket, unread
        idle.idle_since -= 2  # idle long enough to be polled (pool.POLL_AFTER_S)
        assert await post(client, up, total_s=3) == (200, b'{"ok":true}')
        await client.aclose()
    assert up.connections == 2 and len(up.requests) == 2


# ------------------------------------------------------------------ pool wait vs deadlines

SSE = b"data: 1\n\ndata: 2\n\ndata: [DONE]\n\n"
STREAM = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n%s" % (
    len(SSE),
    SSE,
)


async def test_waiting_for_a_pooled_connection_is_not_a_first_token_timeout() -> None:
    """pool_size 2, six concurrent streams each read slowly by its caller, an upstream that
    answers at once: the four that wait for a connection do not miss their first token."""
    client = HttpClient()
    async with serve(answering(STREAM)) as up:
        ep = endpoint(up.url, total_s=10, first_token_s=0.2, pool_size=2)

        async def one() -> int:
            reply = await client.open_stream(ep, f"{up.url}/chat", {}, b"{}")
            lines = 0
            async for _ in reply.lines():
                lines += 1
                await asyncio.sleep(0.05)  # a slow consumer holds the connection
            reply.close()
            return lines

        results = await asyncio.gather(*(one() for _ in range(6)), return_exceptions=True)
        await client.aclose()
    assert results == [6] * 6
    assert up.connections == 2


async def test_the_pool_wait_is_bounded_by_the_total_deadline() -> None:
    client = HttpClient()
    async with serve(answering(STREAM)) as up:
        ep = endpoint(up.url, total_s=0.3, pool_size=1)
        held = await client.open_stream(ep, f"{up.url}/chat", {}, b"{}")
        with pytest.raises(ProviderTimeoutError, match="no connection free") as info:
            await client.post(ep, f"{up.url}/chat", {}, b"{}")
        assert info.value.phase == "pool"
        held.close()
        await client.aclose()


# ------------------------------------------------------------------------- Happy Eyeballs


@contextlib.contextmanager
def black_hole() -> Iterator[tuple[str, int]]:
    """A loopback address whose SYNs are never answered: a listener with a full backlog."""
    listener = socket.socket()
    listener.bind(("127.0.0.2", 0))
    listener.listen(0)
    filler = socket.socket()
    filler.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        filler.connect(listener.getsockname())
    try:
        yield listener.getsockname()
    finally:
        filler.close()
        listener.close()


@contextlib.asynccontextmanager
async def two_addresses(
    monkeypatch: pytest.MonkeyPatch, name: str, first: tuple[str, int], second: tuple[str, int]
) -> AsyncIterator[None]:
    """`name` resolves to `first`, then `second` (each with its own port)."""
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo

    async def getaddrinfo(host: Any, port: Any, *args: Any, **kw: Any) -> Any:
        if host != name:
            return await real(host, port, *args, **kw)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", a) for a in (first, second)]

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    yield


async def test_a_black_holed_first_address_does_not_spend_the_connect_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The name's first address never answers; the second is tried after 250 ms (RFC 8305)
    instead of after the whole 2 s connect timeout."""
    client = HttpClient()
    with black_hole() as hole:
        async with serve(answering(ok())) as up:
            real = ("127.0.0.1", up.port)
            async with two_addresses(monkeypatch, "dual.test", hole, real):
                url = f"http://dual.test:{up.port}/v1"
                ep = endpoint(url, connect_s=2)
                reply = await client.post(ep, f"{url}/chat/completions", {}, b"{}")
                assert reply.status == 200
            await client.aclose()

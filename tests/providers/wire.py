"""A loopback upstream whose every connection runs a scripted coroutine, for transport tests.

The script gets the connection's reader and writer and does exactly what a real upstream
might: answer, stall, trickle, reset mid-way, send bytes no HTTP server should. The server
records how many connections it accepted and every request it read (so a test can count
the POSTs that really reached the upstream).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from engine.endpoints import Endpoint, Timeouts


@dataclass
class Upstream:
    url: str = ""
    port: int = 0
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)

    async def read_request(self, reader: asyncio.StreamReader) -> bytes | None:
        """One whole request (head and Content-Length body), recorded; None at EOF."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        request = head + await reader.readexactly(length)
        self.requests.append(request)
        return request


#: A connection's behaviour: (upstream, reader, writer, connection number).
Script = Callable[[Upstream, asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


def ok(body: bytes = b'{"ok":true}', extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0), as a crashed or overloaded upstream does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@asynccontextmanager
async def serve(
    script: Script, tls: ssl.SSLContext | None = None, host: str = "localhost"
) -> AsyncIterator[Upstream]:
    """Run `script` for every accepted connection until the block ends."""
    up = Upstream()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = up.connections
        up.connections += 1
        try:
            await script(up, reader, writer, number)
        except (asyncio.CancelledError, ConnectionError):
            pass  # the test is over, or the client went away first
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls)
    up.port = server.sockets[0].getsockname()[1]
    up.url = f"{'https' if tls else 'http'}://{host}:{up.port}/v1"
    async with server:
        yield up


def answering(answer: bytes) -> Script:
    """Every request on every connection gets `answer`; the connection stays open."""

    async def script(
        up: Upstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int
    ) -> None:
        while await up.read_request(reader) is not None:
            writer.write(answer)
            await writer.drain()

    return script


def endpoint(url: str, total_s: float = 5.0, **kw: object) -> Endpoint:
    timeouts = Timeouts(
        connect_s=float(kw.pop("connect_s", 2.0)),  # type: ignore[arg-type]
        total_s=total_s,
        first_token_s=kw.pop("first_token_s", None),  # type: ignore[arg-type]
    )
    return Endpoint(
        provider="raw",
        protocol="openai",
        base_url=url,
        upstream_model="m",
        timeouts=timeouts,
        **kw,  # type: ignore[arg-type]
    )


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy bytes one way until EOF, then close the other side."""
    with contextlib.suppress(ConnectionError, asyncio.CancelledError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


def _proxy_dns(host: str) -> str:
    """The proxies' own DNS: `provider.test` is the loopback fake behind them."""
    return "127.0.0.1" if host == "provider.test" else host


@asynccontextmanager
async def connect_proxy(
    answer: bytes = b"HTTP/1.1 200 Connection established\r\n\r\n",
    tls: ssl.SSLContext | None = None,
) -> AsyncIterator[tuple[int, list[bytes]]]:
    """A CONNECT proxy (TLS to it when `tls`): records each tunnel request, then pipes."""
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head)
        if not answer.startswith(b"HTTP/1.1 200"):
            writer.write(answer)
            writer.close()
            return
        host, port = head.split(b" ")[1].decode().rsplit(":", 1)
        up_reader, up_writer = await asyncio.open_connection(_proxy_dns(host), int(port))
        writer.write(answer)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls)
    async with server:
        yield server.sockets[0].getsockname()[1], seen


@asynccontextmanager
async def socks5_proxy(
    credentials: tuple[bytes, bytes] | None = None,
) -> AsyncIterator[tuple[int, list[tuple[str, int]]]]:
    """A SOCKS5 proxy (RFC 1928, with RFC 1929 user/password when `credentials`): records
    each CONNECT's destination, then pipes."""
    seen: list[tuple[str, int]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _, count = await reader.readexactly(2)
        await reader.readexactly(count)
        writer.write(b"\x05\x02" if credentials else b"\x05\x00")
        if credentials:
            _, size = await reader.readexactly(2)
            user = await reader.readexactly(size)
            password = await reader.readexactly((await reader.readexactly(1))[0])
            if (user, password) != credentials:
                writer.write(b"\x01\x01")
                return
            writer.write(b"\x01\x00")
        _, _, _, kind = await reader.readexactly(4)
        if kind == 3:
            host = (await reader.readexactly((await reader.readexactly(1))[0])).decode()
        else:
            host = socket.inet_ntop(
                socket.AF_INET if kind == 1 else socket.AF_INET6,
                await reader.readexactly(4 if kind == 1 else 16),
            )
        port = int.from_bytes(await reader.readexactly(2), "big")
        seen.append((host, port))
        up_reader, up_writer = await asyncio.open_connection(_proxy_dns(host), port)
        writer.write(b"\x05\x00\x00\x01" + socket.inet_aton("127.0.0.1") + b"\x00\x00")
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1], seen

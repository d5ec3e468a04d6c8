"""Opening a connection to an origin: name resolution, Happy Eyeballs, TLS.

A provider's name often resolves to several addresses (IPv6 and IPv4, several A records).
Trying them one by one would let a black-holed first address (a SYN that is never answered)
spend the whole connect timeout; RFC 8305 "Happy Eyeballs" starts the next address after
`HAPPY_EYEBALLS_DELAY_S` while the first is still trying, with the address families
interleaved, and keeps whichever connects first. asyncio's own `create_connection` has this
(`happy_eyeballs_delay`), but uvloop's, which the server runs on, does not, so the race is
run by aiohappyeyeballs (aiohttp's implementation, on `loop.sock_connect`, which both loops
have) and the connected socket is then handed to `create_connection(sock=...)` for TLS.
"""

from __future__ import annotations

import asyncio
import socket
import ssl

import aiohappyeyeballs

from .connection import Connection, Target, tls_context
from .pool import Dial

__all__ = ["HAPPY_EYEBALLS_DELAY_S", "attach", "direct", "open_socket"]

#: RFC 8305's recommended "Connection Attempt Delay".
HAPPY_EYEBALLS_DELAY_S = 0.25


async def open_socket(loop: asyncio.AbstractEventLoop, host: str, port: int) -> socket.socket:
    """A connected TCP socket to `host:port`, its addresses raced per RFC 8305."""
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if not infos:
        raise OSError(f"{host}: the name has no address")
    return await aiohappyeyeballs.start_connection(
        infos, happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY_S, interleave=1, loop=loop
    )


async def attach(
    loop: asyncio.AbstractEventLoop, conn: Connection, sock: socket.socket, tls_host: str | None
) -> None:
    """Run `conn` on the connected `sock`, with TLS to `tls_host` when one is given."""
    context: ssl.SSLContext | None = tls_context() if tls_host else None
    try:
        await loop.create_connection(lambda: conn, sock=sock, ssl=context, server_hostname=tls_host)
    except BaseException:
        sock.close()  # a no-op when the failed transport already closed it
        raise


def direct(loop: asyncio.AbstractEventLoop, target: Target) -> Dial:
    """Connect straight to the target (TLS when it is https)."""

    async def dial(conn: Connection) -> None:
        sock = await open_socket(loop, target.host, target.port)
        await attach(loop, conn, sock, target.host if target.tls else None)

    return dial

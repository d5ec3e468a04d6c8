"""uvicorn's httptools protocol, writing each response's head and body in one send().

An ASGI response is two messages, and uvicorn writes each to the socket as it comes: the
status line and headers, then the body. uvloop sends every write at once, so a small JSON
answer costs two send() calls and reaches the client as two TCP segments. Measured at
concurrency 1 (a raw ASGI app, loopback), joining them saves ~6 us of server CPU and
~0.01 ms of latency per request, a noticeable share of the whole hop.

`CoalescingTransport` sits between uvicorn's protocol and the real transport. It holds a
write that starts a response (`HTTP/1.1 ...`) and sends it together with the next write,
which in practice comes in the same step of the same task (uvicorn's `send` does not yield
between the ASGI start and body messages unless the socket is full). A held head is never
left behind: a `call_soon` callback sends it at the end of the current loop iteration, and
`close` sends it first. Everything else passes straight through.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_HEAD = b"HTTP/1.1 "


class CoalescingTransport:
    """A transport that sends a response's head with the write that follows it."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.writelines((held, data))
        elif data[:9] == _HEAD:
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        """Send a held head now (the next loop iteration, or before closing)."""
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def __getattr__(self, name: str) -> Any:
        # The rest of the transport API (set_protocol for upgrades, buffer limits, ...).
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a `CoalescingTransport` (pass it as `http=`)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        wrapped: Any = CoalescingTransport(transport, self.loop)
        super().connection_made(wrapped)

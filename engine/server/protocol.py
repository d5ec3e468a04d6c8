"""uvicorn's httptools protocol, writing a response's head and body in one send().

An ASGI response is two messages, and uvicorn writes each to the socket as it comes: the
status line and headers, then the body. uvloop sends every write at once, so a small JSON
answer costs two send() calls and reaches the client as two TCP segments. Measured at
concurrency 1 (a raw ASGI app, loopback), joining them saves ~6 us of server CPU and
~0.01 ms of latency per request, a noticeable share of the whole hop.

`CoalescingTransport` sits between uvicorn's protocol and the real transport. It holds a
write that starts a response (`HTTP/1.1 ...`) and sends it with the next write, which in
practice comes in the same step of the same task (uvicorn's `send` does not yield between
the ASGI start and body messages unless the socket is full); a `call_soon` sends a head
left alone at the end of the loop's turn, and `close` sends it first.

When a state store holds writes "for before the answer" (engine/state/before_answer.py: a
call's cost booked in Redis, so a replica killed after answering has booked what it
answered; a worker's metrics files), a write waits instead for the end of the loop's turn,
with every other answer of that turn, and they leave after the stores' writes: the turn's
bookings go in one write instead of one each (bench.workers). Only then: waiting for the
turn's end on every answer put one more loop turn (an epoll_wait and a wake-up) between
the provider's reply and the client's answer, +0.05-0.1 ms at concurrency 1 (bench.proxy).
The first connection arms the stores' holding.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn._types import ASGI3Application
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from engine.server import head
from engine.state import before_answer

_HEAD = b"HTTP/1.1 "


class CoalescingTransport:
    """A transport that sends a response's head with the write that follows it, or what a
    loop turn wrote at the turn's end while state stores hold writes for before it."""

    __slots__ = ("_loop", "_out", "_transport", "_turn")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._out: list[bytes] | None = None  # what waits to be sent
        self._turn = False  # it waits for the turn's end (else: a head for its body)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        out = self._out
        if out is not None:
            out.append(bytes(data))
            if not self._turn:  # the held head's body: both leave now
                self.flush()
        elif before_answer.holders():
            self._out, self._turn = [bytes(data)], True
            self._loop.call_soon(self.flush)
        elif data[:9] == _HEAD:
            self._out, self._turn = [bytes(data)], False
            self._loop.call_soon(self.flush)  # in case no body follows in this step
        else:
            self._transport.write(data)

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def flush(self) -> None:
        """Send what waits (the head and its body, the turn's writes, or a head left
        alone), after whatever the state stores hold for before an answer."""
        out = self._out
        if out is not None:
            self._out = None
            before_answer.flush()
            if not self._transport.is_closing():
                self._transport.writelines(out)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._out = None
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
    """uvicorn's httptools protocol over a `CoalescingTransport` (pass it as `http=`), its
    answers' heads written by `head.HeadSend`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        before_answer.arm()  # every answer of this process now leaves through a flush
        wrapped: Any = CoalescingTransport(transport, self.loop)
        super().connection_made(wrapped)

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        super()._start_asgi_task(cycle, head.with_head_send(app, cycle))

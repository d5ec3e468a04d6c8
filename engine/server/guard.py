"""Limits on what a client may make the server hold before the app sees a request.

uvicorn's httptools protocol buffers a request's head with no bound (one 64 MB header added
64 MB of memory; 10,000 headers were accepted) and times out only a keep-alive connection
that is idle after a response: a client that connects and sends nothing, or trickles its
head or body a byte at a time, held its connection (and memory) for ever. All of this
happens before authentication, so any client could do it.

`GuardedHttpToolsProtocol` adds, per connection:

- a head limit: more than `max_header_bytes` of request line and headers, or more than
  `max_headers` header fields, is answered `431` and the connection closed (the bytes are
  counted as they arrive, so memory stays within the limit plus one socket read; the
  fields are counted once the head is complete, which the byte limit already bounds);
- a head timeout: the request line and headers must arrive within `header_timeout_s` of the
  connection opening or of the request's first byte: `408`, closed. A new connection that
  sent nothing at all is closed without an answer (there is no request to answer);
- a body timeout: the body must arrive within `body_timeout_s` of the end of the head:
  `408`, closed (unless the app already started its answer; then the connection is closed).

Idle keep-alive connections close after uvicorn's `timeout_keep_alive` (`idle_timeout_s`),
timed on the same one-timer `Deadline` (uvicorn arms and cancels a loop timer for it).
The limits travel in `GuardedConfig`, a uvicorn `Config` that pickles into every worker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httptools
import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from engine.server.protocol import CoalescingHttpToolsProtocol


@dataclass(frozen=True, slots=True)
class ProtocolLimits:
    """What one connection may send before the app answers (see the module docstring)."""

    max_header_bytes: int = 64 * 1024
    max_headers: int = 100
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0


#: How long a refused connection is drained (read and discarded) before it is closed.
LINGER_S = 2.0


class Deadline:
    """One connection's next deadline (head, body, linger), on at most one loop timer.

    Each request moves the deadline three times (its head's, its body's, none); a
    `call_later` and a `cancel` each time cost ~10k instructions a request. Here moving it
    is a clock read: the armed timer stays, and when it fires before the deadline (which
    moved later meanwhile) it re-arms for the rest. Only a deadline earlier than the armed
    timer re-arms at once."""

    __slots__ = ("_at", "_callback", "_loop", "_timer", "_when")

    #: How early a timer may fire and still count (the loop's clock ticks in milliseconds).
    SLACK_S = 0.001

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._at = self._when = 0.0
        self._callback: Callable[[], None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    @property
    def pending(self) -> bool:
        return self._callback is not None

    def set(self, delay: float, callback: Callable[[], None]) -> None:
        """Call `callback` in `delay` seconds unless the deadline is moved or cleared first."""
        self._at, self._callback = self._loop.time() + delay, callback
        if self._timer is None or self._at < self._when:
            self._start()

    def clear(self) -> None:
        self._callback = None

    def cancel(self) -> None:
        """No deadline and no timer (the connection is gone: nothing may keep it alive)."""
        self._callback = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _start(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._when = self._at
        self._timer = self._loop.call_at(self._at, self._fire)

    def _fire(self) -> None:
        self._timer = None
        callback = self._callback
        if callback is None:
            return
        if self._loop.time() + self.SLACK_S < self._at:
            self._start()  # the deadline moved later since the timer was armed
            return
        self._callback = None
        callback()


class GuardedConfig(uvicorn.Config):
    """uvicorn's Config plus the engine's protocol limits (read by the protocol)."""

    def __init__(self, app: Any, limits: ProtocolLimits, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.limits = limits


class _Refused(Exception):
    """Raised inside a parser callback to stop parsing; carries the answer to send."""

    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def refusal(status: int, message: str, code: str) -> bytes:
    """A whole HTTP answer with an OpenAI-shaped error body that closes the connection."""
    body = orjson.dumps(
        {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": code,
            }
        }
    )
    head = (
        b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
        % len(body)
    )
    return STATUS_LINE[status] + head + body


class GuardedHttpToolsProtocol(CoalescingHttpToolsProtocol):
    """The server's HTTP protocol: coalesced writes plus the limits above."""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.limits: ProtocolLimits = getattr(config, "limits", None) or ProtocolLimits()
        self._head_bytes = 0  # bytes received while a head is incomplete
        self._in_head = True  # waiting for (the rest of) a request's head
        self._begun = False  # a byte of the current request has arrived
        self._deadline = Deadline(self.loop)
        self._raw: asyncio.Transport | None = None  # under the coalescing wrapper
        self._refused = False  # answered a refusal: what still arrives is discarded
        self._idle = False  # the deadline is the idle keep-alive timeout (until a request begins)

    # ----------------------------------------------------------------- connection events

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._raw = transport
        super().connection_made(transport)
        self._deadline.set(self.limits.header_timeout_s, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._deadline.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """uvicorn's `data_received`, counting the head's bytes and answering refusals."""
        if self._refused or self.transport.is_closing():
            return  # discarded unread: never buffered
        if self._in_head:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _Refused):  # raised by one of our callbacks
                refused = exc.__context__
                self._refuse(refused.status, refused.message, refused.code)
            else:
                self.logger.warning("Invalid HTTP request received.")
                self.send_400_response("Invalid HTTP request received.")
            return
        if self._in_head and self._head_bytes > self.limits.max_header_bytes:
            self._refuse(*self._too_large())

    # ----------------------------------------------------------------- parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._begun:
            self._begun = True
            if self._idle or not self._deadline.pending:  # after a keep-alive answer: the
                self._idle = False  # head's own deadline ends the idle one
                self._deadline.set(self.limits.header_timeout_s, self._head_timed_out)

    def on_headers_complete(self) -> None:
        if self._head_bytes > self.limits.max_header_bytes:
            raise _Refused(*self._too_large())
        if len(self.headers) > self.limits.max_headers:
            raise _Refused(
                431, f"more than {self.limits.max_headers} request headers", "headers_too_large"
            )
        self._in_head = False
        self._deadline.set(self.limits.body_timeout_s, self._body_timed_out)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._deadline.clear()
        self._in_head, self._begun = True, False
        self._head_bytes = 0
        super().on_message_complete()

    def on_response_complete(self) -> None:
        """uvicorn's, with the idle keep-alive timeout on the connection's `Deadline`: its
        own `call_later` and the `cancel` when the next request comes cost ~6.8k
        instructions a request."""
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:  # a pipelined request waits: start it
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        elif not self._begun:  # (a next request under way has its head's deadline)
            self._idle = True
            self._deadline.set(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    # ----------------------------------------------------------------- timers and answers

    def _too_large(self) -> tuple[int, str, str]:
        limit = self.limits.max_header_bytes
        return 431, f"request line and headers exceed {limit} bytes", "headers_too_large"

    def _head_timed_out(self) -> None:
        if not self._begun and self._head_bytes == 0:
            self._close()  # a connection that never sent a byte: nothing to answer
            return
        limit = self.limits.header_timeout_s
        self._refuse(408, f"request headers not received within {limit:g} s", "request_timeout")

    def _body_timed_out(self) -> None:
        cycle = self.cycle
        if cycle is not None and cycle.response_started:
            self._close()
            return
        limit = self.limits.body_timeout_s
        self._refuse(408, f"request body not received within {limit:g} s", "request_timeout")

    def _refuse(self, status: int, message: str, code: str) -> None:
        """Answer `status`, then close after a short linger.

        Closing a socket with unread bytes in it makes the kernel send a reset, which can
        destroy the answer before the client reads it (a client still sending a 64 MB
        header has plenty unread). So the answer goes out with a FIN (`write_eof`), what
        still arrives is read and dropped, and the socket closes once the client closes
        or `LINGER_S` later. The app, if it was waiting for the body, sees a disconnect."""
        self._deadline.clear()
        raw = self._raw
        if raw is None or self._refused or raw.is_closing():
            return
        self._refused = True
        self.logger.warning("refused a request: %s", message)
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False
        raw.write(refusal(status, message, code))
        if raw.can_write_eof():
            raw.write_eof()
            self._deadline.set(LINGER_S, self._close)
        else:
            self._close()

    def eof_received(self) -> None:
        """The client closed its side: after a refusal, that ends the linger."""
        if self._refused:
            self._close()

    def _close(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()

"""HTTP/1.1 keep-alive connections on asyncio protocols, parsed by httptools, pooled per origin.

Why this and not aiohttp (the transport before it, still there per provider as
`transport: aiohttp`, aio.py): an LLM call is one small JSON POST, and a router makes a
great many of them, so the client's own CPU per call bounds the engine's throughput.
bench/adapters.py measures both against the same loopback upstream, adapter included:
over aiohttp the OpenAI adapter spends about twice the CPU per call and makes 1.6x fewer
requests per second (docs/runtime.md, "The HTTP client"). The conformance suite in
tests/providers holds both to the same outcome on misbehaving upstreams. The HTTP parsing
itself is not ours: `httptools` (llhttp, the parser under uvicorn) does it, including
chunked framing.

What it does: one request at a time per connection (no pipelining), Content-Length bodies
out, Content-Length / chunked / close-delimited bodies in, interim `1xx` answers skipped,
gzip and deflate answers, TLS with the system's default trust store, and read-side
back-pressure for streams. The head of an answer (status line, headers, trailers, interim
answers) is bounded in bytes and in count, so an upstream streaming an endless header fails
fast with a protocol error instead of growing memory. What it leaves out on purpose:
redirects (an API's 3xx is an error to report), cookies, HTTP/2. Pooling is pool.py's,
dialing (Happy Eyeballs, proxies) dial.py's and proxy.py's. Deadlines belong to the caller
(http.py), which closes a connection whose exchange it abandons, so a connection is only
reused after a complete answer. The caller gives each request its deadline; one timer per
loop enforces them all, and a loop turn's request writes leave together (per_loop.py).
"""

from __future__ import annotations

import asyncio
import select
import ssl
import zlib
from collections import deque
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, cast
from urllib.parse import urlsplit

import httptools

from .per_loop import turn_writes_of, watch_of

__all__ = ["BadResponse", "Connection", "ConnectionLost", "Target", "target_of", "tls_context"]

#: Unread stream bytes at which a connection stops reading from its socket, and resumes.
READ_HIGH = 512 * 1024
READ_LOW = 64 * 1024
#: An idle connection older than this is closed rather than reused (servers drop them).
KEEPALIVE_S = 15.0
#: Bytes of an answer that are not body (status lines, headers, trailers, interim answers,
#: chunk framing) allowed in a row, and header lines per answer. Go allows 1 MB of headers,
#: curl 100 KB, aiohttp 8 KB per line; provider answers carry about 2 KB.
MAX_HEAD_BYTES = 128 * 1024
MAX_HEADERS = 256


class ConnectionLost(Exception):
    """The connection closed before the answer was complete; `answered`: bytes had come."""

    def __init__(self, answered: bool, reason: str) -> None:
        super().__init__(reason)
        self.answered = answered


class BadResponse(Exception):
    """The upstream sent something that is not HTTP/1.1 (httptools refused to parse it)."""


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed URL: where to connect (the pool's key) and what goes in the request line."""

    origin: str  # scheme://host:port, the pool key
    host: str
    port: int
    tls: bool
    head: bytes  # "POST <path> HTTP/1.1\r\nHost: <host>\r\n"


@lru_cache(maxsize=1024)  # a provider's URLs repeat on every call; parsing them does not
def target_of(url: str) -> Target:
    """Split `url` once; raises ValueError for a URL this client cannot call."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {parts.scheme}://{parts.hostname or ''}")
    tls = scheme == "https"
    port = parts.port or (443 if tls else 80)
    host = parts.hostname
    shown = f"[{host}]" if ":" in host else host  # an IPv6 literal keeps its brackets
    default = port == (443 if tls else 80)
    host_header = shown if default else f"{shown}:{port}"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    head = f"POST {path} HTTP/1.1\r\nHost: {host_header}\r\n".encode("latin-1")
    return Target(f"{scheme}://{shown}:{port}", host, port, tls, head)


@lru_cache(maxsize=1)
def tls_context() -> ssl.SSLContext:
    """The system trust store, as every mainstream client uses by default."""
    return ssl.create_default_context()


class Connection(asyncio.Protocol):
    """One socket: sends a request, parses the answer, hands out status, headers and body.

    A request either waits for the whole answer (`whole=True`) or for its headers, after
    which `read()` returns body bytes as they arrive (b"" at the end).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._writes = turn_writes_of(loop)
        self._watch = watch_of(loop)
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        # RFC 9112 2.2: a recipient MAY take a bare LF as a line end; aiohttp, curl and Go
        # do, and the conformance suite holds this client to the same answer.
        self._parser.set_dangerous_leniencies(lenient_optional_cr_before_lf=True)
        self._waiter: asyncio.Future[None] | None = None  # the request's headers/answer
        self._reader: asyncio.Future[None] | None = None  # a stream reader waiting for bytes
        self._whole = True
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._decoder: Any = None  # zlib decompressor for gzip/deflate answers
        self._framed = False  # Content-Length or chunked: the close is not the end
        self._stray = False  # a message after the answer: ignored, and the connection retired
        self._error: BaseException | None = None
        self._interim = False  # the message being parsed is a 1xx (100 Continue, 103 ...)
        self._head = 0  # bytes in a row that carried no body (bounded by MAX_HEAD_BYTES)
        self._body_seen = False  # body bytes came in the current feed
        self._fields = 0  # header and trailer lines of the current answer
        self._over: str | None = None  # which bound the answer broke, if one
        self._fd = -1  # the socket, polled before reuse
        self.status = 0
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.headers_done = False
        self.complete = True  # no request in progress
        self._keep = False  # both sides keep the connection open after this answer
        self.answered = False  # bytes of the current answer have arrived
        self.closed = False
        self.idle_since = 0.0

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but behave as one
        self._transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        self._fd = sock.fileno() if sock is not None else -1

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.complete:
            return
        if self.headers_done and not self._framed:
            self.on_message_complete()  # a body delimited by the close is now whole
            return
        reason = type(exc).__name__ if exc else "closed by the upstream"
        self._fail(ConnectionLost(self.answered, reason))

    def data_received(self, data: bytes) -> None:
        if self.complete:  # bytes while no request is out (a 408 before an idle close, say):
            self.close()  # the connection's state is unknown, so it is never reused
            return
        self.answered = True
        self._body_seen = False
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._refuse(self._over or f"malformed HTTP answer ({type(exc).__name__})")
        if self._stray:
            self.close()
            return
        # Bytes that carried no body: the head (and trailers) httptools buffers until a
        # line ends. Counted per read, so memory stays within the bound plus one read.
        self._head = 0 if self._body_seen else self._head + len(data)
        if self._head > MAX_HEAD_BYTES and not self.complete:
            self._refuse(f"answer head larger than {MAX_HEAD_BYTES // 1024} KiB")

    def pause_writing(self) -> None:  # a request body is small; nothing to throttle
        pass

    def resume_writing(self) -> None:
        pass

    # -- httptools callbacks --------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:  # a second message in the same bytes as the answer: not ours
            self._stray = True
            self._keep = False
            return
        self.raw_headers = []
        self._framed = False
        self._decoder = None

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields += 1
        if self._fields > MAX_HEADERS:  # httptools stops and raises HttpParserCallbackError
            self._over = f"more than {MAX_HEADERS} header lines in the answer"
            raise BadResponse(self._over)
        if self._stray or self.headers_done:  # trailers are counted, not kept
            return
        self.raw_headers.append((name, value))
        lower = name.lower()
        if lower == b"content-length" or (lower == b"transfer-encoding" and b"chunked" in value):
            self._framed = True
        elif lower == b"content-encoding" and value.strip().lower() in (b"gzip", b"deflate"):
            self._decoder = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header

    def on_headers_complete(self) -> None:
        if self._stray:
            return
        self.status = self._parser.get_status_code()
        if 100 <= self.status < 200:  # 100 Continue, 103 Early Hints: the answer follows
            self._interim = True
            return
        self.headers_done = True
        if not self._whole:
            self._wake_waiter()

    def on_body(self, body: bytes) -> None:
        if self._stray:
            return
        self._body_seen = True
        if self._decoder is not None:
            body = self._decoder.decompress(body)
            if not body:
                return
        self._chunks.append(body)
        self._buffered += len(body)
        if self._whole:
            return
        if self._buffered > READ_HIGH and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()
        self._wake_reader()

    def on_message_complete(self) -> None:
        if self._stray:
            return
        if self._interim:  # only an interim answer ended; keep waiting for the real one
            self._interim = False
            return
        if self._decoder is not None:
            tail = self._decoder.flush()
            if tail:
                self._chunks.append(tail)
        self.complete = True
        self._keep = self._parser.should_keep_alive() and not self.closed
        self._wake_waiter()
        self._wake_reader()

    # -- the caller's side ----------------------------------------------------------------

    def send(self, data: bytes, whole: bool, deadline: float) -> asyncio.Future[None]:
        """Write one request; the future resolves at the answer's headers (or its end), or
        fails with TimeoutError at `deadline` (loop time) if they have not come by then."""
        assert self._transport is not None and self.complete
        self._whole = whole
        self._chunks.clear()
        self._buffered = 0
        self._error = None
        self.headers_done = False
        self.complete = False
        self.answered = False
        self._keep = False
        self._interim = False
        self._head = 0
        self._fields = 0
        waiter = self._waiter = self._loop.create_future()
        self._watch.add(self, deadline)
        self._writes.write(self._transport, data, self._watch.alone())
        return waiter

    def expire(self) -> None:
        """The request's deadline passed: it fails with TimeoutError (http.py names the
        phase) and the connection is never reused."""
        self._fail(TimeoutError())

    def body(self) -> bytes:
        """The whole answer's body (after a `whole` request completed)."""
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        return data

    async def read(self, deadline: float) -> bytes:
        """The next body bytes of a streamed answer; b"" once it is complete; TimeoutError
        if none have come by `deadline` (loop time)."""
        chunks = self._chunks
        while not chunks:
            if self._error is not None:
                raise self._error
            if self.complete:
                return b""
            reader = self._reader = self._loop.create_future()
            self._watch.add(self, deadline)
            try:
                await reader
            finally:
                self._reader = None
                self._watch.discard(self)
        data = chunks.popleft()
        self._buffered -= len(data)
        if self._paused and self._buffered <= READ_LOW and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()
        return data

    @property
    def reusable(self) -> bool:
        """A complete answer on a connection both sides keep open."""
        return self.complete and self._keep and not self.closed and self._error is None

    def quiet(self) -> bool:
        """Whether an idle connection's socket has nothing to read: no close (FIN/RST) and no
        stray bytes the event loop has not delivered yet. Asked right before reuse, so a
        request is never written to a connection the upstream is known to have dropped
        (the request is then never sent twice: see http.py)."""
        if self.closed or self._fd < 0:
            return not self.closed
        poll = select.poll()  # no FD_SETSIZE limit, unlike select()
        try:
            poll.register(self._fd, select.POLLIN)
            return not poll.poll(0)
        except (OSError, ValueError):
            return False

    def close(self) -> None:
        self.closed = True
        self._watch.discard(self)
        if self._transport is not None:
            self._transport.close()

    def _refuse(self, why: str) -> None:
        """The answer broke the protocol or a bound: fail the request and drop the socket."""
        self._fail(BadResponse(why))
        self.close()

    def _fail(self, exc: BaseException) -> None:
        self._watch.discard(self)
        self._error = exc
        self.complete = True
        self._keep = False
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self._wake_reader()

    def _wake_waiter(self) -> None:
        self._watch.discard(self)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wake_reader(self) -> None:
        reader = self._reader
        if reader is not None and not reader.done():
            reader.set_result(None)

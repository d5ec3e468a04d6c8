"""The hot-path HTTP transport every adapter shares: pooled keep-alive POSTs with deadlines.

The connections themselves are connection.py (asyncio protocols parsed by httptools,
chosen over aiohttp and httpx by measurement: bench/adapters.py prints the figures).
Adapters never see them: they call `post` or `open_stream` and get bytes, headers and lines
back, so the transport can be swapped in one place.

One pool (sized by `Endpoint.pool_size`) per base URL origin and event loop. Timeouts
follow `Endpoint.timeouts`: `connect_s` for the socket connect, `first_token_s` (streams
only: a plain answer has no first token before its last) until the response headers and
the first body bytes, `total_s` for the whole exchange. Waiting for one of
the pool's connections is not the upstream's time: `first_token_s` starts when the request
is written, and the wait is bounded by `total_s` alone (`phase="pool"` when it runs out).
Each becomes `ProviderTimeoutError(phase=...)`; connection failures become
`UnavailableError` before a response and `ProtocolError` once an answer has started (it was
cut short). Nothing here retries, not even the classic keep-alive race: a kept-alive
connection is only reused while its socket is quiet (pool.py), and when the upstream closes
one without answering after the request was written, the request may have been read and
acted on, so the call fails (`UnavailableError`, retryable) and the runtime's retry, which
counts every attempt, decides; a POST is never re-sent behind its back.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Mapping

from multidict import CIMultiDict, CIMultiDictProxy

from engine.endpoints import Endpoint
from engine.errors import ProviderTimeoutError
from engine.tracecontext import OUTGOING_TRACEPARENT

from .connection import BadResponse, Connection, ConnectionLost, Target
from .outcomes import (
    USER_AGENT,
    Deadlines,
    Reply,
    make_reply,
    raise_bad_header,
    raise_connect_timeout,
    raise_cut,
    raise_pool_timeout,
    raise_unanswered,
    raise_unreachable,
    raise_unroutable,
    split_lines,
)
from .pool import Pool
from .proxy import Proxy, dialer, route

__all__ = ["HttpClient", "Reply", "StreamReply", "shared_client"]


class StreamReply:
    """An open streaming answer. Read `lines()` to the end or call `close()`."""

    __slots__ = ("_conn", "_deadlines", "_endpoint", "_pool", "headers", "status")

    def __init__(
        self, pool: Pool, conn: Connection, endpoint: Endpoint, deadlines: Deadlines
    ) -> None:
        self._pool: Pool | None = pool
        self._conn = conn
        self._endpoint = endpoint
        self._deadlines = deadlines
        self.status: int = conn.status
        self.headers: Mapping[str, str] = _headers(conn)

    async def read(self) -> bytes:
        """The whole body (for error answers), within the total deadline."""
        chunks = []
        try:
            while data := await self._conn.read(self._deadlines.total):
                chunks.append(data)
        except TimeoutError:
            self.close()
            raise self._deadlines.timeout_error(self._endpoint, first=False) from None
        except (ConnectionLost, BadResponse) as exc:
            self.close()
            raise_cut(self._endpoint, _cut(exc))
        return b"".join(chunks)

    async def lines(self) -> AsyncIterator[bytes]:
        """Body lines without terminators; enforces first-token and total deadlines."""
        conn = self._conn
        pending = b""
        first = True
        while True:
            deadline = self._deadlines.first if first else self._deadlines.total
            try:  # kept by the loop's one timer (per_loop.py): a stream reads many times
                data = await conn.read(deadline)
            except TimeoutError:
                raise self._deadlines.timeout_error(self._endpoint, first) from None
            except (ConnectionLost, BadResponse) as exc:
                raise_cut(self._endpoint, _cut(exc))
            if not data:
                break
            first = False
            complete, pending = split_lines(pending, data)
            for line in complete:
                yield line
        if pending:
            yield pending

    def close(self) -> None:
        """Give the connection back (or drop it when the body was not read to the end)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.release(self._conn)


def _cut(exc: BaseException) -> str:
    if isinstance(exc, BadResponse):
        return f"bad answer: {exc}"
    return f"connection lost mid-answer ({type(exc).__name__})"


def _headers(conn: Connection) -> CIMultiDictProxy[str]:
    """The answer's headers, looked up case-insensitively (as HTTP names are)."""
    return CIMultiDictProxy(
        CIMultiDict([(k.decode("latin-1"), v.decode("latin-1")) for k, v in conn.raw_headers])
    )


#: Sent with every request after the request line and Host.
_FIXED = (f"User-Agent: {USER_AGENT}\r\nAccept: */*\r\nAccept-Encoding: gzip, deflate\r\n").encode(
    "latin-1"
)


@functools.lru_cache(maxsize=256)
def _lines(items: tuple[tuple[str, str], ...]) -> bytes | None:
    """`items` as header lines, or None when one cannot be sent (CR/LF, NUL, outside
    latin-1). Kept per set of headers: an adapter sends the same few on every call of an
    endpoint, and building them anew cost ~4k instructions a request (bench.instructions)."""
    text = "".join([f"{name}: {value}\r\n" for name, value in items])
    # Each header contributes exactly one CR and one LF; more means one smuggles a line.
    if text.count("\r") != len(items) or text.count("\n") != len(items) or "\0" in text:
        return None
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return None


def _encode(endpoint: Endpoint, target: Target, headers: Mapping[str, str], body: bytes) -> bytes:
    """The request's bytes; a header with CR/LF (or outside latin-1) is refused, not sent."""
    extra = _lines(tuple(headers.items()))
    if extra is None:
        raise_bad_header(endpoint)
    trace = OUTGOING_TRACEPARENT.get()  # set only while a traced attempt is in flight
    if trace is not None:
        extra += b"traceparent: %s\r\n" % trace
    return b"%s%s%sContent-Length: %d\r\n\r\n%s" % (target.head, _FIXED, extra, len(body), body)


class HttpClient:
    """Keep-alive connection pools, one per (event loop, base URL origin)."""

    def __init__(self) -> None:
        self._pools: dict[str, tuple[asyncio.AbstractEventLoop, Pool]] = {}

    def _pool_for(self, endpoint: Endpoint, url: str) -> tuple[Pool, Target]:
        try:
            target, proxy = route(url)
        except ValueError as exc:
            raise_unroutable(endpoint, exc)
        return self._pool(endpoint, target, proxy), target

    def _pool(self, endpoint: Endpoint, target: Target, proxy: Proxy | None) -> Pool:
        loop = asyncio.get_running_loop()
        key = target.origin if proxy is None else f"{target.origin} via {proxy.host}:{proxy.port}"
        entry = self._pools.get(key)
        if entry is not None and entry[0] is loop and not entry[1].closed:
            return entry[1]
        # A pool from another (usually finished) loop cannot be used here: start a new one.
        # Code that runs a loop per call must `await aclose_all()` before its loop ends.
        pool = Pool(endpoint.pool_size, loop, dialer(loop, target, proxy))
        self._pools[key] = (loop, pool)
        return pool

    async def _acquire(
        self, pool: Pool, endpoint: Endpoint, began: float
    ) -> tuple[Connection, bool]:
        """A connection, the wait for a free one bounded by the total deadline alone."""
        # An idle connection needs no wait, so no timer and no coroutine: 265k -> 232k
        # instructions per POST through this client (callgrind, bench.runtime's upstream).
        conn = pool.take_idle()
        if conn is not None:
            return conn, True
        t = endpoint.timeouts
        try:
            async with asyncio.timeout_at(began + t.total_s):
                try:
                    return await pool.acquire(t.connect_s)
                except TimeoutError:  # the connect's own (the outer shows as cancellation)
                    raise_connect_timeout(endpoint)
                except OSError as exc:  # refused, unreachable, DNS, TLS, proxy
                    raise_unreachable(endpoint, type(exc).__name__)
        except ProviderTimeoutError:
            raise
        except TimeoutError:
            raise_pool_timeout(endpoint)

    async def _send(
        self,
        endpoint: Endpoint,
        pool: Pool,
        conn: Connection,
        reused: bool,
        data: bytes,
        whole: bool,
        deadline: float,
    ) -> None:
        """Write the request once; returns when the headers (or, `whole`, the answer) have
        arrived, or raises TimeoutError at `deadline`. Whatever ends this early closes the
        connection (never reused)."""
        try:
            await conn.send(data, whole, deadline)
        except ConnectionLost as exc:
            pool.release(conn)
            if conn.headers_done:
                raise_cut(endpoint, _cut(exc))
            if reused and not exc.answered:
                raise_unanswered(endpoint)
            raise_unreachable(endpoint, type(exc).__name__, sent=True)
        except BadResponse as exc:
            pool.release(conn)
            raise_cut(endpoint, _cut(exc))
        except BaseException:
            pool.release(conn)  # abandoned mid-exchange: closed, never reused
            raise

    async def _exchange(
        self,
        endpoint: Endpoint,
        url: str,
        request: tuple[Mapping[str, str], bytes],
        streaming: bool,
    ) -> tuple[Pool, Connection, Deadlines]:
        """Get a connection, then send within the first deadline (for a whole answer that
        is the total one: one deadline covers both phases), its expiry named by the phase it
        cut short."""
        began = asyncio.get_running_loop().time()
        pool, target = self._pool_for(endpoint, url)
        data = _encode(endpoint, target, request[0], request[1])
        conn, reused = await self._acquire(pool, endpoint, began)
        deadlines = Deadlines.start(endpoint, streaming, began)
        try:  # the deadline is the loop's one timer's to keep (per_loop.py), not a timer each
            await self._send(endpoint, pool, conn, reused, data, not streaming, deadlines.first)
        except TimeoutError:
            raise deadlines.timeout_error(endpoint, first=not conn.headers_done) from None
        return pool, conn, deadlines

    async def post(
        self, endpoint: Endpoint, url: str, headers: Mapping[str, str], body: bytes
    ) -> Reply:
        """One request, whole answer read; deadlines and connection errors translated."""
        pool, conn, _ = await self._exchange(endpoint, url, (headers, body), False)
        reply = make_reply(status=conn.status, headers=_headers(conn), body=conn.body())
        pool.release(conn)
        return reply

    async def open_stream(
        self, endpoint: Endpoint, url: str, headers: Mapping[str, str], body: bytes
    ) -> StreamReply:
        """One request whose body is read incrementally by the caller."""
        pool, conn, deadlines = await self._exchange(endpoint, url, (headers, body), True)
        return StreamReply(pool, conn, endpoint, deadlines)

    async def warm(self, endpoint: Endpoint, connections: int = 1) -> None:
        """Open up to `connections` keep-alive connections to the endpoint's origin."""
        pool, _ = self._pool_for(endpoint, endpoint.base_url)
        try:
            await pool.warm(max(1, connections), endpoint.timeouts.connect_s)
        except TimeoutError:
            raise_connect_timeout(endpoint)
        except OSError as exc:
            raise_unreachable(endpoint, type(exc).__name__)

    async def ping(self, endpoint: Endpoint) -> None:
        """Reach the upstream on a fresh connection (TCP, proxy, TLS handshakes) or raise
        the translated error: evidence for health, never an idle socket that may be stale."""
        pool, _ = self._pool_for(endpoint, endpoint.base_url)
        try:
            await pool.ping(endpoint.timeouts.connect_s)
        except TimeoutError:
            raise_connect_timeout(endpoint)
        except OSError as exc:
            raise_unreachable(endpoint, type(exc).__name__)

    async def aclose(self) -> None:
        """Close every pool that belongs to the running loop; forget the others."""
        loop = asyncio.get_running_loop()
        pools, self._pools = self._pools, {}
        for owner, pool in pools.values():
            if owner is loop:
                pool.close()


_SHARED = HttpClient()


def shared_client() -> HttpClient:
    """The process-wide transport the built-in adapters share."""
    return _SHARED

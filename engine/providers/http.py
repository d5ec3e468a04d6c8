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
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import NoReturn

from multidict import CIMultiDict, CIMultiDictProxy

from engine.endpoints import Endpoint
from engine.errors import (
    AuthenticationError,
    ProtocolError,
    ProviderTimeoutError,
    UnavailableError,
)

from .connection import BadResponse, Connection, ConnectionLost, Target
from .pool import Pool
from .proxy import Proxy, dialer, route

__all__ = ["HttpClient", "Reply", "StreamReply", "shared_client"]

_USER_AGENT = "llm-routing-engine/0.1"


@dataclass(frozen=True, slots=True)
class _Deadlines:
    """Absolute loop times by which each phase must be done."""

    first: float  # headers (and the first streamed bytes) must have arrived
    total: float
    first_is_first_token: bool  # whether `first` comes from first_token_s (names the phase)

    @classmethod
    def start(cls, endpoint: Endpoint, streaming: bool, began: float) -> _Deadlines:
        """First token counted from now (the request is about to be written), the total
        from `began` (when the call asked for a connection)."""
        now = asyncio.get_running_loop().time()
        t = endpoint.timeouts
        total = began + t.total_s
        if streaming and t.first_token_s is not None and now + t.first_token_s < total:
            return cls(now + t.first_token_s, total, True)
        return cls(total, total, False)

    def timeout_error(self, endpoint: Endpoint, first: bool) -> ProviderTimeoutError:
        """The error for a missed deadline (`first`: the first one), naming its phase."""
        t = endpoint.timeouts
        if first and self.first_is_first_token and t.first_token_s is not None:
            phase, what, limit = "first_token", "first token", t.first_token_s
        else:
            phase, what, limit = "total", "answer", t.total_s
        return ProviderTimeoutError(
            f"{endpoint.provider}: no {what} within {limit:g}s",
            phase=phase,
            provider=endpoint.provider,
            model=endpoint.upstream_model,
        )


@dataclass(frozen=True, slots=True)
class Reply:
    """A complete non-streaming answer: status, headers (case-insensitive) and raw body."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class StreamReply:
    """An open streaming answer. Read `lines()` to the end or call `close()`."""

    __slots__ = ("_conn", "_deadlines", "_endpoint", "_pool", "headers", "status")

    def __init__(
        self, pool: Pool, conn: Connection, endpoint: Endpoint, deadlines: _Deadlines
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
            async with asyncio.timeout_at(self._deadlines.total):
                while data := await self._conn.read():
                    chunks.append(data)
        except TimeoutError:
            self.close()
            raise self._deadlines.timeout_error(self._endpoint, first=False) from None
        except (ConnectionLost, BadResponse) as exc:
            self.close()
            _raise_cut(self._endpoint, exc)
        return b"".join(chunks)

    async def lines(self) -> AsyncIterator[bytes]:
        """Body lines without terminators; enforces first-token and total deadlines."""
        conn = self._conn
        pending = b""
        first = True
        while True:
            deadline = self._deadlines.first if first else self._deadlines.total
            try:
                async with asyncio.timeout_at(deadline):
                    data = await conn.read()
            except TimeoutError:
                raise self._deadlines.timeout_error(self._endpoint, first) from None
            except (ConnectionLost, BadResponse) as exc:
                _raise_cut(self._endpoint, exc)
            if not data:
                break
            first = False
            pending += data
            *complete, pending = pending.split(b"\n")
            for line in complete:
                yield line[:-1] if line[-1:] == b"\r" else line
        if pending:
            yield pending

    def close(self) -> None:
        """Give the connection back (or drop it when the body was not read to the end)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.release(self._conn)


def _headers(conn: Connection) -> CIMultiDictProxy[str]:
    """The answer's headers, looked up case-insensitively (as HTTP names are)."""
    return CIMultiDictProxy(
        CIMultiDict([(k.decode("latin-1"), v.decode("latin-1")) for k, v in conn.raw_headers])
    )


def _raise_cut(endpoint: Endpoint, exc: BaseException) -> NoReturn:
    """A cut answer, or one that is not HTTP or breaks a bound (the message says which)."""
    what = f"bad answer: {exc}" if isinstance(exc, BadResponse) else "connection lost mid-answer"
    raise ProtocolError(
        f"{endpoint.provider}: {what} ({type(exc).__name__})",
        provider=endpoint.provider,
        model=endpoint.upstream_model,
    ) from None


def _raise_unreachable(endpoint: Endpoint, exc: BaseException) -> NoReturn:
    raise UnavailableError(
        f"{endpoint.provider}: cannot reach upstream ({type(exc).__name__})",
        provider=endpoint.provider,
        model=endpoint.upstream_model,
    ) from None


def _raise_unroutable(endpoint: Endpoint, exc: ValueError) -> NoReturn:
    """A URL or proxy setting this client cannot use; the message says which (no secret:
    proxy credentials are never part of it)."""
    raise UnavailableError(
        f"{endpoint.provider}: cannot reach upstream: {exc}",
        provider=endpoint.provider,
        model=endpoint.upstream_model,
    ) from None


def _raise_unanswered(endpoint: Endpoint) -> NoReturn:
    raise UnavailableError(
        f"{endpoint.provider}: the upstream closed a kept-alive connection without answering "
        "(the request may have reached it, so it is not re-sent)",
        provider=endpoint.provider,
        model=endpoint.upstream_model,
    ) from None


def _raise_pool_timeout(endpoint: Endpoint) -> NoReturn:
    raise ProviderTimeoutError(
        f"{endpoint.provider}: no connection free within {endpoint.timeouts.total_s:g}s "
        f"(pool_size {endpoint.pool_size})",
        phase="pool",
        provider=endpoint.provider,
        model=endpoint.upstream_model,
    ) from None


def _raise_bad_header(endpoint: Endpoint) -> NoReturn:
    """A typed error for a header no HTTP request can carry; the value is never quoted."""
    raise AuthenticationError(
        f"{endpoint.provider}: a request header cannot be sent: the API key (or a `header:` "
        "option) contains a control character such as a newline",
        provider=endpoint.provider,
        model=endpoint.upstream_model,
    ) from None


def _raise_connect_timeout(endpoint: Endpoint) -> NoReturn:
    raise ProviderTimeoutError(
        f"{endpoint.provider}: connect timed out after {endpoint.timeouts.connect_s:g}s",
        phase="connect",
        provider=endpoint.provider,
        model=endpoint.upstream_model,
    ) from None


#: Sent with every request after the request line and Host.
_FIXED = (f"User-Agent: {_USER_AGENT}\r\nAccept: */*\r\nAccept-Encoding: gzip, deflate\r\n").encode(
    "latin-1"
)


def _encode(endpoint: Endpoint, target: Target, headers: Mapping[str, str], body: bytes) -> bytes:
    """The request's bytes; a header with CR/LF (or outside latin-1) is refused, not sent."""
    text = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
    # Each header contributes exactly one CR and one LF; more means one smuggles a line.
    if text.count("\r") != len(headers) or text.count("\n") != len(headers) or "\0" in text:
        _raise_bad_header(endpoint)
    try:
        extra = text.encode("latin-1")
    except UnicodeEncodeError:
        _raise_bad_header(endpoint)
    return b"%s%s%sContent-Length: %d\r\n\r\n%s" % (target.head, _FIXED, extra, len(body), body)


class HttpClient:
    """Keep-alive connection pools, one per (event loop, base URL origin)."""

    def __init__(self) -> None:
        self._pools: dict[str, tuple[asyncio.AbstractEventLoop, Pool]] = {}

    def _pool_for(self, endpoint: Endpoint, url: str) -> tuple[Pool, Target]:
        try:
            target, proxy = route(url)
        except ValueError as exc:
            _raise_unroutable(endpoint, exc)
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
        t = endpoint.timeouts
        try:
            async with asyncio.timeout_at(began + t.total_s):
                try:
                    return await pool.acquire(t.connect_s)
                except TimeoutError:  # the connect's own (the outer shows as cancellation)
                    _raise_connect_timeout(endpoint)
                except OSError as exc:  # refused, unreachable, DNS, TLS, proxy
                    _raise_unreachable(endpoint, exc)
        except ProviderTimeoutError:
            raise
        except TimeoutError:
            _raise_pool_timeout(endpoint)

    async def _send(
        self,
        endpoint: Endpoint,
        pool: Pool,
        conn: Connection,
        reused: bool,
        data: bytes,
        whole: bool,
    ) -> None:
        """Write the request once; returns when the headers (or, `whole`, the answer) have
        arrived. Whatever ends this early closes the connection (never reused)."""
        try:
            await conn.send(data, whole)
        except ConnectionLost as exc:
            pool.release(conn)
            if conn.headers_done:
                _raise_cut(endpoint, exc)
            if reused and not exc.answered:
                _raise_unanswered(endpoint)
            _raise_unreachable(endpoint, exc)
        except BadResponse as exc:
            pool.release(conn)
            _raise_cut(endpoint, exc)
        except BaseException:
            pool.release(conn)  # abandoned mid-exchange: closed, never reused
            raise

    async def _exchange(
        self,
        endpoint: Endpoint,
        url: str,
        request: tuple[Mapping[str, str], bytes],
        streaming: bool,
    ) -> tuple[Pool, Connection, _Deadlines]:
        """Get a connection, then send within the first deadline (for a whole answer that
        is the total one: one timer covers both phases), its expiry named by the phase it
        cut short."""
        began = asyncio.get_running_loop().time()
        pool, target = self._pool_for(endpoint, url)
        data = _encode(endpoint, target, request[0], request[1])
        conn, reused = await self._acquire(pool, endpoint, began)
        deadlines = _Deadlines.start(endpoint, streaming, began)
        try:
            async with asyncio.timeout_at(deadlines.first):
                await self._send(endpoint, pool, conn, reused, data, not streaming)
        except TimeoutError:
            raise deadlines.timeout_error(endpoint, first=not conn.headers_done) from None
        return pool, conn, deadlines

    async def post(
        self, endpoint: Endpoint, url: str, headers: Mapping[str, str], body: bytes
    ) -> Reply:
        """One request, whole answer read; deadlines and connection errors translated."""
        pool, conn, _ = await self._exchange(endpoint, url, (headers, body), False)
        reply = Reply(conn.status, _headers(conn), conn.body())
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
            _raise_connect_timeout(endpoint)
        except OSError as exc:
            _raise_unreachable(endpoint, exc)

    async def ping(self, endpoint: Endpoint) -> None:
        """Reach the upstream on a fresh connection (TCP, proxy, TLS handshakes) or raise
        the translated error: evidence for health, never an idle socket that may be stale."""
        pool, _ = self._pool_for(endpoint, endpoint.base_url)
        try:
            await pool.ping(endpoint.timeouts.connect_s)
        except TimeoutError:
            _raise_connect_timeout(endpoint)
        except OSError as exc:
            _raise_unreachable(endpoint, exc)

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

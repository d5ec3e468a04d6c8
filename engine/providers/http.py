"""The hot-path HTTP transport every adapter shares: pooled keep-alive POSTs with deadlines.

Why aiohttp and not httpx: bench/adapters.py measures both against a loopback server, and
aiohttp's per-call overhead is several times lower (figures in that file's output and in
the issue's closing note). Adapters never touch aiohttp: they call `post` or `open_stream`
and get bytes, headers and lines back, so the transport can be swapped in one place.

One `aiohttp.ClientSession` (one keep-alive pool, sized by `Endpoint.pool_size`) per base
URL origin and event loop. Timeouts follow `Endpoint.timeouts`: `connect_s` for the socket
connect, `first_token_s` (streams only: a plain answer has no first token before its last)
until the response headers and the first body bytes, `total_s` for the whole exchange.
Each becomes `ProviderTimeoutError(phase=...)`; connection failures become
`UnavailableError` before a response and `ProtocolError` once a stream has started (the
answer was cut short). Nothing here retries.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import NoReturn

import aiohttp
from yarl import URL

from engine.endpoints import Endpoint
from engine.errors import (
    AuthenticationError,
    ProtocolError,
    ProviderTimeoutError,
    UnavailableError,
)

__all__ = ["HttpClient", "Reply", "StreamReply", "shared_client"]

_USER_AGENT = "llm-routing-engine/0.1"


@dataclass(frozen=True, slots=True)
class _Deadlines:
    """Absolute loop times by which each phase must be done."""

    first: float  # headers (and the first streamed bytes) must have arrived
    total: float
    first_is_first_token: bool  # whether `first` comes from first_token_s (names the phase)

    @classmethod
    def start(cls, endpoint: Endpoint, streaming: bool) -> _Deadlines:
        now = asyncio.get_running_loop().time()
        t = endpoint.timeouts
        total = now + t.total_s
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

    __slots__ = ("_deadlines", "_endpoint", "_resp", "headers", "status")

    def __init__(
        self, resp: aiohttp.ClientResponse, endpoint: Endpoint, deadlines: _Deadlines
    ) -> None:
        self._resp = resp
        self._endpoint = endpoint
        self._deadlines = deadlines
        self.status: int = resp.status
        self.headers: Mapping[str, str] = resp.headers

    async def read(self) -> bytes:
        """The whole body (for error answers), within the total deadline."""
        return await _read_all(self._resp, self._endpoint, self._deadlines)

    async def lines(self) -> AsyncIterator[bytes]:
        """Body lines without terminators; enforces first-token and total deadlines."""
        content = self._resp.content
        pending = b""
        first = True
        while True:
            deadline = self._deadlines.first if first else self._deadlines.total
            try:
                async with asyncio.timeout_at(deadline):
                    data = await content.readany()
            except TimeoutError:
                raise self._deadlines.timeout_error(self._endpoint, first) from None
            except aiohttp.ClientError as exc:
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
        if self._resp.content.at_eof():
            self._resp.release()
        else:
            self._resp.close()


async def _read_all(
    resp: aiohttp.ClientResponse, endpoint: Endpoint, deadlines: _Deadlines
) -> bytes:
    """The rest of the body within the total deadline; the connection is dropped on failure."""
    try:
        async with asyncio.timeout_at(deadlines.total):
            return await resp.read()
    except TimeoutError:
        resp.close()
        raise deadlines.timeout_error(endpoint, first=False) from None
    except aiohttp.ClientError as exc:
        resp.close()
        _raise_cut(endpoint, exc)


def _raise_cut(endpoint: Endpoint, exc: BaseException) -> NoReturn:
    raise ProtocolError(
        f"{endpoint.provider}: connection lost mid-answer ({type(exc).__name__})",
        provider=endpoint.provider,
        model=endpoint.upstream_model,
    ) from None


def _raise_unreachable(endpoint: Endpoint, exc: BaseException) -> NoReturn:
    raise UnavailableError(
        f"{endpoint.provider}: cannot reach upstream ({type(exc).__name__})",
        provider=endpoint.provider,
        model=endpoint.upstream_model,
    ) from None


def _raise_bad_header(endpoint: Endpoint) -> NoReturn:
    """A typed error instead of aiohttp's ValueError; the value itself is never quoted."""
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


@lru_cache(maxsize=64)  # one immutable value per connect timeout, not one per request
def _connect_timeout(connect_s: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=None, sock_connect=connect_s)


class HttpClient:
    """Keep-alive connection pools, one per (event loop, base URL origin)."""

    def __init__(self) -> None:
        self._sessions: dict[str, tuple[asyncio.AbstractEventLoop, aiohttp.ClientSession]] = {}
        self._origins: dict[str, str] = {}

    def _origin(self, base_url: str) -> str:
        origin = self._origins.get(base_url)
        if origin is None:
            origin = self._origins[base_url] = str(URL(base_url).origin())
        return origin

    def _session(self, endpoint: Endpoint) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        key = self._origin(endpoint.base_url)
        entry = self._sessions.get(key)
        if entry is not None and entry[0] is loop and not entry[1].closed:
            return entry[1]
        # A pool from another (usually finished) loop cannot be used here: start a new one.
        # Code that runs a loop per call must `await aclose_all()` before its loop ends.
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=endpoint.pool_size, limit_per_host=endpoint.pool_size, ttl_dns_cache=300
            ),
            timeout=aiohttp.ClientTimeout(total=None),
            cookie_jar=aiohttp.DummyCookieJar(),
            headers={"User-Agent": _USER_AGENT},
        )
        self._sessions[key] = (loop, session)
        return session

    async def _send(
        self,
        endpoint: Endpoint,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        deadlines: _Deadlines,
    ) -> aiohttp.ClientResponse:
        try:
            async with asyncio.timeout_at(deadlines.first):
                return await self._request(endpoint, url, headers, body)
        except ProviderTimeoutError:
            raise  # the connect phase, already named
        except TimeoutError:
            raise deadlines.timeout_error(endpoint, first=True) from None

    async def _request(
        self, endpoint: Endpoint, url: str, headers: Mapping[str, str], body: bytes
    ) -> aiohttp.ClientResponse:
        """Send once (the caller holds the deadline); the lower library's errors translated."""
        session = self._session(endpoint)
        timeout = _connect_timeout(endpoint.timeouts.connect_s)
        try:
            return await session.post(url, data=body, headers=headers, timeout=timeout)
        except aiohttp.ConnectionTimeoutError:
            _raise_connect_timeout(endpoint)
        except (aiohttp.ClientError, OSError) as exc:
            _raise_unreachable(endpoint, exc)
        except ValueError:  # aiohttp refuses CR/LF in a header: a key with a stray newline
            _raise_bad_header(endpoint)

    async def post(
        self, endpoint: Endpoint, url: str, headers: Mapping[str, str], body: bytes
    ) -> Reply:
        """One request, whole answer read; deadlines and connection errors translated."""
        deadlines = _Deadlines.start(endpoint, streaming=False)
        resp: aiohttp.ClientResponse | None = None
        try:
            # One timer for both phases: without streaming they share the total deadline.
            async with asyncio.timeout_at(deadlines.total):
                resp = await self._request(endpoint, url, headers, body)
                try:
                    data = await resp.read()
                except aiohttp.ClientError as exc:
                    resp.close()
                    _raise_cut(endpoint, exc)
        except ProviderTimeoutError:
            raise  # the connect phase, already named
        except TimeoutError:
            if resp is not None:
                resp.close()
            raise deadlines.timeout_error(endpoint, first=resp is None) from None
        return Reply(resp.status, resp.headers, data)

    async def open_stream(
        self, endpoint: Endpoint, url: str, headers: Mapping[str, str], body: bytes
    ) -> StreamReply:
        """One request whose body is read incrementally by the caller."""
        deadlines = _Deadlines.start(endpoint, streaming=True)
        resp = await self._send(endpoint, url, headers, body, deadlines)
        return StreamReply(resp, endpoint, deadlines)

    async def warm(self, endpoint: Endpoint, connections: int = 1) -> None:
        """Open `connections` keep-alive connections to the endpoint's origin (any status)."""
        session = self._session(endpoint)
        url = self._origin(endpoint.base_url) + "/"
        timeout = aiohttp.ClientTimeout(
            total=endpoint.timeouts.total_s, sock_connect=endpoint.timeouts.connect_s
        )

        async def one() -> None:
            try:
                async with session.head(url, timeout=timeout) as resp:
                    await resp.read()
            except aiohttp.ConnectionTimeoutError:
                _raise_connect_timeout(endpoint)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                _raise_unreachable(endpoint, exc)

        await asyncio.gather(*(one() for _ in range(max(1, connections))))

    async def aclose(self) -> None:
        """Close every pool that belongs to the running loop; forget the others."""
        loop = asyncio.get_running_loop()
        sessions, self._sessions = self._sessions, {}
        for owner, session in sessions.values():
            if owner is loop:
                await session.close()


_SHARED = HttpClient()


def shared_client() -> HttpClient:
    """The process-wide transport the built-in adapters share."""
    return _SHARED

"""The aiohttp transport: the per-provider escape hatch `transport: aiohttp` in models.yaml.

Same contract as the engine's own client (outcomes.py: `Reply`, `Stream`, deadlines and the
errors each failure becomes), on aiohttp's `ClientSession`, for an upstream whose HTTP the
hand-written client handles badly; tests/providers' conformance suite replays the same
scripted upstreams against both and asserts the same outcome.

The pool bound (`pool_size`) is a semaphore taken before the request, so waiting for a
connection never counts against the first-token deadline (aiohttp's own `limit` would
count it); the connector itself is unbounded. aiohttp never re-sends a POST either (it
retries only idempotent methods). Proxies come from the environment (`trust_env`, set when
a proxy variable is), as aiohttp supports them (http:// and https://; SOCKS is the engine
client's only).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import NoReturn
from urllib.request import getproxies_environment

import aiohttp

from engine.endpoints import Endpoint
from engine.errors import ProviderTimeoutError

from .connection import Connection, tls_context
from .outcomes import (
    USER_AGENT,
    Deadlines,
    Reply,
    check_headers,
    raise_connect_timeout,
    raise_cut,
    raise_pool_timeout,
    raise_unreachable,
    raise_unroutable,
    split_lines,
)
from .proxy import dialer, route

__all__ = ["AiohttpClient", "AiohttpStream"]

_HEADERS = {"User-Agent": USER_AGENT, "Accept": "*/*"}


class _Origin:
    """One origin on one loop: its session and the pool-size bound."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int) -> None:
        self.loop = loop
        self.slots = asyncio.Semaphore(max(1, limit))
        connector = aiohttp.TCPConnector(limit=0, ssl=tls_context(), happy_eyeballs_delay=0.25)
        # trust_env makes aiohttp look up proxies and netrc (in a thread) on every request:
        # only worth it when the environment names a proxy.
        self.session = aiohttp.ClientSession(
            connector=connector, trust_env=bool(getproxies_environment()), auto_decompress=True
        )


def _translate(endpoint: Endpoint, exc: BaseException, answered: bool) -> NoReturn:
    """aiohttp's error, named as the engine client names the same failure: before an
    answer, the upstream was not reached (or closed unanswered); an answer aiohttp cannot
    parse, or one cut short, is a protocol error."""
    name = type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        raise_connect_timeout(endpoint)
    if isinstance(exc, aiohttp.ClientConnectorError):  # refused, DNS, TLS, proxy
        raise_unreachable(endpoint, name)
    if isinstance(exc, aiohttp.ClientResponseError | aiohttp.ClientPayloadError):
        raise_cut(endpoint, f"bad answer: {exc}")
    if answered:
        raise_cut(endpoint, f"connection lost mid-answer ({name})")
    raise_unreachable(endpoint, name, sent=True)


class AiohttpStream:
    """An open streaming answer over aiohttp (see outcomes.Stream)."""

    __slots__ = ("_deadlines", "_endpoint", "_origin", "_response", "headers", "status")

    def __init__(
        self,
        origin: _Origin | None,
        response: aiohttp.ClientResponse,
        endpoint: Endpoint,
        deadlines: Deadlines,
    ) -> None:
        self._origin = origin
        self._response = response
        self._endpoint = endpoint
        self._deadlines = deadlines
        self.status: int = response.status
        self.headers: Mapping[str, str] = response.headers

    async def read(self) -> bytes:
        try:
            async with asyncio.timeout_at(self._deadlines.total):
                return await self._response.read()
        except TimeoutError:
            self.close()
            raise self._deadlines.timeout_error(self._endpoint, first=False) from None
        except aiohttp.ClientError as exc:
            self.close()
            _translate(self._endpoint, exc, answered=True)

    async def lines(self) -> AsyncIterator[bytes]:
        pending, first = b"", True
        content = self._response.content
        while True:
            deadline = self._deadlines.first if first else self._deadlines.total
            try:
                async with asyncio.timeout_at(deadline):
                    data = await content.readany()
            except TimeoutError:
                raise self._deadlines.timeout_error(self._endpoint, first) from None
            except aiohttp.ClientError as exc:
                _translate(self._endpoint, exc, answered=True)
            if not data:
                break
            first = False
            complete, pending = split_lines(pending, data)
            for line in complete:
                yield line
        if pending:
            yield pending

    def close(self) -> None:
        origin, self._origin = self._origin, None
        if origin is None:
            return
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()
        origin.slots.release()


class AiohttpClient:
    """aiohttp sessions, one per (event loop, base URL origin)."""

    def __init__(self) -> None:
        self._origins: dict[str, _Origin] = {}

    def _origin(self, endpoint: Endpoint, url: str) -> _Origin:
        try:
            target, _ = route(url)
        except ValueError as exc:
            raise_unroutable(endpoint, exc)
        loop = asyncio.get_running_loop()
        origin = self._origins.get(target.origin)
        if origin is None or origin.loop is not loop or origin.session.closed:
            origin = self._origins[target.origin] = _Origin(loop, endpoint.pool_size)
        return origin

    async def _slot(self, origin: _Origin, endpoint: Endpoint, began: float) -> None:
        try:
            async with asyncio.timeout_at(began + endpoint.timeouts.total_s):
                await origin.slots.acquire()
        except TimeoutError:
            raise_pool_timeout(endpoint)

    async def _request(
        self,
        endpoint: Endpoint,
        url: str,
        request: tuple[Mapping[str, str], bytes],
        streaming: bool,
    ) -> tuple[_Origin, aiohttp.ClientResponse, Deadlines]:
        """Take a slot, then send within the first deadline (the connect within its own)."""
        check_headers(endpoint, request[0])
        began = asyncio.get_running_loop().time()
        origin = self._origin(endpoint, url)
        await self._slot(origin, endpoint, began)
        deadlines = Deadlines.start(endpoint, streaming, began)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=endpoint.timeouts.connect_s)
        headers = {**_HEADERS, **request[0]}
        response: aiohttp.ClientResponse | None = None
        try:
            async with asyncio.timeout_at(deadlines.first):
                response = await origin.session.post(
                    url, data=request[1], headers=headers, timeout=timeout, allow_redirects=False
                )
                if not streaming:
                    await response.read()
        except BaseException as exc:
            origin.slots.release()
            if response is not None:
                response.close()
            if isinstance(exc, TimeoutError) and not isinstance(exc, ProviderTimeoutError):
                if isinstance(exc, aiohttp.ConnectionTimeoutError):
                    raise_connect_timeout(endpoint)
                raise deadlines.timeout_error(endpoint, first=response is None) from None
            if isinstance(exc, aiohttp.ClientError):
                _translate(endpoint, exc, answered=response is not None)
            raise
        return origin, response, deadlines

    async def post(
        self, endpoint: Endpoint, url: str, headers: Mapping[str, str], body: bytes
    ) -> Reply:
        origin, response, _ = await self._request(endpoint, url, (headers, body), False)
        reply = Reply(response.status, response.headers, await response.read())
        response.release()
        origin.slots.release()
        return reply

    async def open_stream(
        self, endpoint: Endpoint, url: str, headers: Mapping[str, str], body: bytes
    ) -> AiohttpStream:
        origin, response, deadlines = await self._request(endpoint, url, (headers, body), True)
        return AiohttpStream(origin, response, endpoint, deadlines)

    async def warm(self, endpoint: Endpoint, connections: int = 1) -> None:
        """Nothing to open ahead: aiohttp opens connections on the first requests."""
        self._origin(endpoint, endpoint.base_url)

    async def ping(self, endpoint: Endpoint) -> None:
        """A fresh connection (TCP, proxy and TLS handshakes) to the upstream, then closed."""
        try:
            target, via = route(endpoint.base_url)
        except ValueError as exc:
            raise_unroutable(endpoint, exc)
        loop = asyncio.get_running_loop()
        conn = Connection(loop)
        try:
            async with asyncio.timeout(endpoint.timeouts.connect_s):
                await dialer(loop, target, via)(conn)
        except TimeoutError:
            raise_connect_timeout(endpoint)
        except OSError as exc:
            raise_unreachable(endpoint, type(exc).__name__)
        finally:
            conn.close()

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        origins, self._origins = self._origins, {}
        for origin in origins.values():
            if origin.loop is loop:
                await origin.session.close()


_SHARED: AiohttpClient | None = None


def shared_aiohttp() -> AiohttpClient:
    """The process-wide aiohttp transport (made on first use)."""
    global _SHARED
    if _SHARED is None:
        _SHARED = AiohttpClient()
    return _SHARED

"""One JSON exchange with an upstream: what every HTTP adapter's `complete` and `stream` share.

Each protocol differs in its URL, headers, bodies, stream framing and error shapes; none of
them differs in how an exchange goes: encode the body, send it once over the shared
transport, read the rate-limit headers, turn a non-2xx status into the protocol's error, and
(for streams) hand the rate-limit information to the first chunk and give the connection
back however the stream ends. `HttpAdapter` does that part once, so each adapter module
reads as "build body, parse answer, translate errors" and nothing else.

The transport is the engine's own client (http.py) unless the provider says
`transport: aiohttp` (its endpoint options then carry it): aio.py, made on first use.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from typing import Any

from engine.endpoints import Endpoint
from engine.messages import Chunk, RateLimitInfo

from .common import decode_object, dumps
from .failures import ObjectErrors, error_from_body
from .http import HttpClient, shared_client
from .outcomes import Stream, Transport
from .ratelimits import parse_rate_limit

__all__ = ["HttpAdapter", "OpenStream"]


class OpenStream:
    """A streaming answer whose status said success; use as `async with`.

    `lines()` are the body's raw lines, `rate` what the headers said about rate limits, and
    `tag(chunk)` hands that information to the first chunk only (the runtime reads it once
    per answer). Leaving the block closes the answer, whether it was read to the end or not.
    """

    __slots__ = (
        "_body",
        "_endpoint",
        "_errors",
        "_headers",
        "_http",
        "_pending",
        "_reply",
        "_url",
        "rate",
    )

    def __init__(
        self,
        http: Transport,
        endpoint: Endpoint,
        url: str,
        headers: Mapping[str, str],
        body: dict[str, Any],
        errors: ObjectErrors,
    ) -> None:
        self._http = http
        self._endpoint = endpoint
        self._url = url
        self._headers = headers
        self._body = body
        self._errors = errors
        self._reply: Stream | None = None
        self._pending: RateLimitInfo | None = None
        self.rate: RateLimitInfo | None = None

    async def __aenter__(self) -> OpenStream:
        reply = self._reply = await self._http.open_stream(
            self._endpoint, self._url, self._headers, dumps(self._body)
        )
        self.rate = self._pending = parse_rate_limit(reply.headers)
        if reply.status >= 300:
            body = await reply.read()
            raise error_from_body(self._endpoint, reply.status, body, self.rate, self._errors)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reply is not None:
            self._reply.close()

    def lines(self) -> AsyncIterator[bytes]:
        """The body's lines, without terminators, as they arrive."""
        assert self._reply is not None, "use OpenStream as `async with`"
        return self._reply.lines()

    def tag(self, chunk: Chunk) -> Chunk:
        """The chunk, carrying the answer's rate-limit information if it is the first one."""
        pending = self._pending
        if pending is None:
            return chunk
        self._pending = None
        return replace(chunk, rate_limit=pending)


class HttpAdapter:
    """Base of the HTTP adapters: the shared transport, warm-up, close, and the exchange."""

    protocol = "http"

    def __init__(self, http: HttpClient | None = None) -> None:
        self._http = http or shared_client()
        self._aiohttp: Transport | None = None

    def _transport(self, endpoint: Endpoint) -> Transport:
        """The engine's client, or aiohttp for a provider configured with it."""
        if endpoint.options.get("transport") != "aiohttp":
            return self._http
        if self._aiohttp is None:
            from .aio import shared_aiohttp  # aiohttp loads only when a provider asks for it

            self._aiohttp = shared_aiohttp()
        return self._aiohttp

    async def _post_json(
        self,
        endpoint: Endpoint,
        url: str,
        headers: Mapping[str, str],
        body: dict[str, Any],
        errors: ObjectErrors,
    ) -> tuple[dict[str, Any], RateLimitInfo | None]:
        """Send once and read the whole answer: its JSON object and its rate-limit info."""
        reply = await self._transport(endpoint).post(endpoint, url, headers, dumps(body))
        rate = parse_rate_limit(reply.headers)
        if reply.status >= 300:
            raise error_from_body(endpoint, reply.status, reply.body, rate, errors)
        return decode_object(endpoint, reply.body, "response body"), rate

    def _open_stream(
        self,
        endpoint: Endpoint,
        url: str,
        headers: Mapping[str, str],
        body: dict[str, Any],
        errors: ObjectErrors,
    ) -> OpenStream:
        """A streaming request, sent when the returned `OpenStream` is entered."""
        return OpenStream(self._transport(endpoint), endpoint, url, headers, body, errors)

    async def warm(self, endpoint: Endpoint) -> None:
        """Reach the upstream on a fresh connection (evidence for health, raising why not),
        then keep `warm_connections` (default 1) open for the traffic to come."""
        transport = self._transport(endpoint)
        await transport.ping(endpoint)
        await transport.warm(endpoint, int(endpoint.options.get("warm_connections", "1")))

    async def aclose(self) -> None:
        await self._http.aclose()
        if self._aiohttp is not None:
            await self._aiohttp.aclose()

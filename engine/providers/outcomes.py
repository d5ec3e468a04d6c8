"""What every transport gives the adapters, and how its failures are named.

The engine's own client (http.py) and the aiohttp one (aio.py, the per-provider
`transport: aiohttp` escape hatch) answer with the same `Reply` and `Stream` shapes, keep
the same deadlines (`Deadlines`) and raise the same errors for the same failures (the
`raise_*` functions), so an adapter cannot tell them apart and tests/providers'
conformance suite can replay one script against both.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import NoReturn, Protocol

from engine.endpoints import Endpoint
from engine.errors import (
    AuthenticationError,
    ProtocolError,
    ProviderError,
    ProviderTimeoutError,
    UnavailableError,
)
from engine.frozen import builder

__all__ = [
    "USER_AGENT",
    "Deadlines",
    "Reply",
    "Stream",
    "Transport",
    "check_headers",
    "make_reply",
    "raise_bad_header",
    "raise_connect_timeout",
    "raise_cut",
    "raise_pool_timeout",
    "raise_unanswered",
    "raise_unreachable",
    "raise_unroutable",
    "split_lines",
]

USER_AGENT = "llm-routing-engine/0.1"


@dataclass(frozen=True, slots=True)
class Deadlines:
    """Absolute loop times by which each phase must be done."""

    first: float  # headers (and the first streamed bytes) must have arrived
    total: float
    first_is_first_token: bool  # whether `first` comes from first_token_s (names the phase)

    @staticmethod
    def start(endpoint: Endpoint, streaming: bool, began: float) -> Deadlines:
        """First token counted from now (the request is about to be written), the total
        from `began` (when the call asked for a connection)."""
        now = asyncio.get_running_loop().time()
        t = endpoint.timeouts
        total = began + t.total_s
        if streaming and t.first_token_s is not None and now + t.first_token_s < total:
            return _deadlines(first=now + t.first_token_s, total=total, first_is_first_token=True)
        return _deadlines(first=total, total=total, first_is_first_token=False)

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


# One of each per request: builder() skips a frozen dataclass's per-field object.__setattr__
# (engine/frozen.py), ~6k instructions a request for these two (callgrind).
_deadlines = builder(Deadlines)
make_reply = builder(Reply)


class Stream(Protocol):
    """An open streaming answer: read `lines()` to the end (or `read()` an error body),
    then `close()`."""

    status: int
    headers: Mapping[str, str]

    async def read(self) -> bytes: ...

    def lines(self) -> AsyncIterator[bytes]: ...

    def close(self) -> None: ...


class Transport(Protocol):
    """One request per call to an upstream, pooled; what an HTTP adapter sends through."""

    async def post(
        self, endpoint: Endpoint, url: str, headers: Mapping[str, str], body: bytes
    ) -> Reply: ...

    async def open_stream(
        self, endpoint: Endpoint, url: str, headers: Mapping[str, str], body: bytes
    ) -> Stream: ...

    async def warm(self, endpoint: Endpoint, connections: int = 1) -> None: ...

    async def ping(self, endpoint: Endpoint) -> None: ...

    async def aclose(self) -> None: ...


def check_headers(endpoint: Endpoint, headers: Mapping[str, str]) -> None:
    """Refuse a header no HTTP request can carry (CR, LF or NUL smuggle lines)."""
    for name, value in headers.items():
        for text in (name, value):
            if "\r" in text or "\n" in text or "\0" in text:
                raise_bad_header(endpoint)


def split_lines(pending: bytes, data: bytes) -> tuple[list[bytes], bytes]:
    """Complete lines of `pending + data` (terminators cut) and the incomplete rest."""
    *complete, rest = (pending + data).split(b"\n")
    return [line[:-1] if line[-1:] == b"\r" else line for line in complete], rest


def raise_cut(endpoint: Endpoint, why: str) -> NoReturn:
    """A cut answer, or one that is not HTTP or breaks a bound (`why` says which)."""
    raise ProtocolError(
        f"{endpoint.provider}: {why}",
        provider=endpoint.provider,
        model=endpoint.upstream_model,
    ) from None


def raise_unreachable(endpoint: Endpoint, why: str, sent: bool = False) -> NoReturn:
    """`sent`: the request had been written, so the upstream may have worked on it."""
    raise _unsent(
        UnavailableError(
            f"{endpoint.provider}: cannot reach upstream ({why})",
            provider=endpoint.provider,
            model=endpoint.upstream_model,
        ),
        sent,
    ) from None


def _unsent(error: ProviderError, sent: bool = False) -> ProviderError:
    """`error`, marked as one whose request never left (unless `sent`): it cost nothing."""
    error.reached = sent
    return error


def raise_unroutable(endpoint: Endpoint, exc: ValueError) -> NoReturn:
    """A URL or proxy setting this client cannot use; the message says which (no secret:
    proxy credentials are never part of it)."""
    raise _unsent(
        UnavailableError(
            f"{endpoint.provider}: cannot reach upstream: {exc}",
            provider=endpoint.provider,
            model=endpoint.upstream_model,
        )
    ) from None


def raise_unanswered(endpoint: Endpoint) -> NoReturn:
    raise UnavailableError(
        f"{endpoint.provider}: the upstream closed a kept-alive connection without answering "
        "(the request may have reached it, so it is not re-sent)",
        provider=endpoint.provider,
        model=endpoint.upstream_model,
    ) from None


def raise_pool_timeout(endpoint: Endpoint) -> NoReturn:
    raise _unsent(
        ProviderTimeoutError(
            f"{endpoint.provider}: no connection free within {endpoint.timeouts.total_s:g}s "
            f"(pool_size {endpoint.pool_size})",
            phase="pool",
            provider=endpoint.provider,
            model=endpoint.upstream_model,
        )
    ) from None


def raise_bad_header(endpoint: Endpoint) -> NoReturn:
    """A typed error for a header no HTTP request can carry; the value is never quoted."""
    raise _unsent(
        AuthenticationError(
            f"{endpoint.provider}: a request header cannot be sent: the API key (or a "
            "`header:` option) contains a control character such as a newline",
            provider=endpoint.provider,
            model=endpoint.upstream_model,
        )
    ) from None


def raise_connect_timeout(endpoint: Endpoint) -> NoReturn:
    raise _unsent(
        ProviderTimeoutError(
            f"{endpoint.provider}: connect timed out after {endpoint.timeouts.connect_s:g}s",
            phase="connect",
            provider=endpoint.provider,
            model=endpoint.upstream_model,
        )
    ) from None

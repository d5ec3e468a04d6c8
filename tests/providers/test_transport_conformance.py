"""Conformance: the same scripted upstream behaviours against the engine's HTTP client and
aiohttp (the `transport: aiohttp` escape hatch, engine/providers/aio.py), asserting the same
outcome class from both.

Each behaviour is what a real upstream, proxy or broken middlebox does at one phase of an
exchange: interim answers, resets before, during and after the head, stray bytes, bare LF
line ends, chunked trailers, oversize heads, slow trickles, a TLS name mismatch. The outcome
is "ok" (with the body) or the engine error class the transport raised; both clients must
agree, and agree with the expectation written beside the behaviour.
"""

from __future__ import annotations

import asyncio
import gzip
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme

from engine.errors import ProtocolError, ProviderTimeoutError, UnavailableError
from engine.providers import connection, proxy
from engine.providers.aio import AiohttpClient
from engine.providers.http import HttpClient
from engine.providers.outcomes import Transport

from .wire import Upstream, endpoint, ok, reset, serve

BODY = b'{"ok":true}'


async def _answer_then(up: Upstream, reader: Any, writer: Any, data: bytes) -> None:
    await up.read_request(reader)
    writer.write(data)
    await writer.drain()


def answers(data: bytes, then: Callable[[Any], None] | None = None) -> Any:
    """Read one request, write `data`, then `then(writer)` (default: keep serving `data`)."""

    async def script(up: Upstream, reader: Any, writer: Any, n: int) -> None:
        await _answer_then(up, reader, writer, data)
        if then is not None:
            then(writer)
            return
        while await up.read_request(reader) is not None:
            writer.write(data)
            await writer.drain()

    return script


def trickle(head: bytes, body: bytes, every_s: float) -> Any:
    async def script(up: Upstream, reader: Any, writer: Any, n: int) -> None:
        await _answer_then(up, reader, writer, head)
        for i in range(len(body)):
            await asyncio.sleep(every_s)
            writer.write(body[i : i + 1])
            await writer.drain()

    return script


async def _reset_on_accept(up: Upstream, reader: Any, writer: Any, n: int) -> None:
    reset(writer)


async def _close_unanswered(up: Upstream, reader: Any, writer: Any, n: int) -> None:
    await up.read_request(reader)
    writer.close()


async def _reset_unanswered(up: Upstream, reader: Any, writer: Any, n: int) -> None:
    await up.read_request(reader)
    reset(writer)


async def _silent(up: Upstream, reader: Any, writer: Any, n: int) -> None:
    await up.read_request(reader)
    await asyncio.sleep(30)


def _chunked(body: bytes, trailer: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"".join(
            b"%x\r\n%s\r\n" % (len(body[i : i + 4]), body[i : i + 4])
            for i in range(0, len(body), 4)
        )
        + b"0\r\n"
        + trailer
        + b"\r\n"
    )


GZ = gzip.compress(BODY)
HEAD_ONLY = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 20\r\n\r\n"
STRAY = b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


@dataclass
class Case:
    script: Any
    expect: type[Exception] | None  # None: the answer arrives whole
    tls: str | None = None  # the name on the server's certificate
    stream: bool = False
    calls: int = 1  # calls made one after the other; the outcome is the last one's
    timeouts: dict[str, float] = field(default_factory=dict)


CASES = {
    "plain": Case(answers(ok(BODY)), None),
    "100-continue-and-103-early-hints": Case(
        answers(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
            + ok(BODY)
        ),
        None,
    ),
    "reset-on-accept": Case(_reset_on_accept, UnavailableError),
    "closed-after-reading-the-request": Case(_close_unanswered, UnavailableError),
    "reset-after-reading-the-request": Case(_reset_unanswered, UnavailableError),
    "reset-mid-head": Case(answers(b"HTTP/1.1 200 OK\r\nContent-Ty", reset), UnavailableError),
    "reset-mid-body": Case(
        answers(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{part", reset), ProtocolError
    ),
    "closed-mid-body": Case(
        answers(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{part", lambda w: w.close()),
        ProtocolError,
    ),
    "stray-bytes-after-the-answer": Case(answers(ok(BODY) + STRAY), None, calls=2),
    "not-http": Case(answers(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"), ProtocolError),
    "bare-lf-line-ends": Case(answers(b"HTTP/1.1 200 OK\nContent-Length: 11\n\n" + BODY), None),
    "chunked-with-trailers": Case(answers(_chunked(BODY, b"X-Checksum: 1\r\n")), None),
    "gzip": Case(
        answers(
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
            % (len(GZ), GZ)
        ),
        None,
    ),
    "oversize-header": Case(
        answers(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 300_000 + b"\r\n\r\n"), ProtocolError
    ),
    "slow-head": Case(_silent, ProviderTimeoutError, timeouts={"total_s": 0.3}),
    "slow-trickle-body": Case(
        trickle(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n", BODY, 0.1),
        ProviderTimeoutError,
        timeouts={"total_s": 0.4},
    ),
    "stream-no-first-token": Case(
        trickle(HEAD_ONLY, b"data: 1\n\n", 1.0),
        ProviderTimeoutError,
        stream=True,
        timeouts={"first_token_s": 0.2},
    ),
    "stream-cut-mid-body": Case(
        answers(HEAD_ONLY + b"data: 1\n\n", reset), ProtocolError, stream=True
    ),
    "tls": Case(answers(ok(BODY)), None, tls="localhost"),
    "tls-name-mismatch": Case(answers(ok(BODY)), UnavailableError, tls="other.test"),
}


@pytest.fixture
def tls_for(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[Callable[[str], ssl.SSLContext]]:
    """Server TLS contexts from a CA the client trusts (SSL_CERT_FILE); no proxy variables."""
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    connection.tls_context.cache_clear()
    proxy.route.cache_clear()

    def server(name: str) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(name).configure_cert(ctx)
        return ctx

    yield server
    connection.tls_context.cache_clear()
    proxy.route.cache_clear()


async def outcome(client: Transport, case: Case, url: str) -> object:
    """ "ok" with the body, or the class of the engine error the call raised."""
    ep = endpoint(url, **{"total_s": 5.0, **case.timeouts})
    try:
        for _ in range(case.calls):
            if case.stream:
                reply = await client.open_stream(ep, f"{url}/chat", {}, b"{}")
                try:
                    body = b"\n".join([line async for line in reply.lines()])
                finally:
                    reply.close()
            else:
                body = (await client.post(ep, f"{url}/chat", {}, b"{}")).body
    except (UnavailableError, ProtocolError, ProviderTimeoutError) as exc:
        return type(exc)
    return ("ok", body)


CLIENTS: dict[str, Callable[[], Transport]] = {"engine": HttpClient, "aiohttp": AiohttpClient}


@pytest.mark.parametrize("name", list(CASES))
async def test_both_clients_agree(name: str, tls_for: Callable[[str], ssl.SSLContext]) -> None:
    case = CASES[name]
    got: dict[str, object] = {}
    for label, make in CLIENTS.items():
        client = make()
        tls = tls_for(case.tls) if case.tls else None
        async with serve(case.script, tls=tls) as up:
            try:
                got[label] = await outcome(client, case, up.url)
            finally:
                await client.aclose()
    expected = ("ok", BODY) if case.expect is None else case.expect
    assert got == {"engine": expected, "aiohttp": expected}

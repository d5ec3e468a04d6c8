"""The engine's own HTTP/1.1 client (engine/providers/connection.py + http.py) on the wire.

A scripted loopback server answers each request with exact bytes, so framing (chunked,
close-delimited, gzip), keep-alive reuse, the stale-connection race, cut and malformed
answers, warm-up and TLS are each checked the way a real upstream would produce them.
"""

from __future__ import annotations

import asyncio
import gzip
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from engine.endpoints import Endpoint, Timeouts
from engine.errors import (
    AuthenticationError,
    ProtocolError,
    ProviderTimeoutError,
    UnavailableError,
)
from engine.providers import connection, proxy
from engine.providers.http import HttpClient

from .wire import connect_proxy

#: What the server does with one request: (bytes to write, close the socket afterwards).
Script = Callable[[int, int, bytes], tuple[bytes, bool]]


def ok(body: bytes = b'{"ok":true}', extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


@dataclass
class Upstream:
    url: str
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)


async def _read_request(reader: asyncio.StreamReader) -> bytes | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head + await reader.readexactly(length)


@asynccontextmanager
async def upstream(script: Script, tls: ssl.SSLContext | None = None) -> AsyncIterator[Upstream]:
    """A server calling `script(connection_no, request_no_on_it, request)` per request."""
    up = Upstream("")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn_no = up.connections
        up.connections += 1
        n = 0
        try:
            while (request := await _read_request(reader)) is not None:
                up.requests.append(request)
                data, close = script(conn_no, n, request)
                n += 1
                writer.write(data)
                await writer.drain()
                if close:
                    break
        except asyncio.CancelledError:
            pass  # the test is over and the server is closing
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    up.url = f"{'https' if tls else 'http'}://localhost:{port}/v1"
    async with server:
        yield up


def endpoint(url: str, total_s: float = 5.0) -> Endpoint:
    return Endpoint(
        provider="raw",
        protocol="openai",
        base_url=url,
        upstream_model="m",
        timeouts=Timeouts(connect_s=2, total_s=total_s),
    )


async def post(client: HttpClient, up: Upstream, body: bytes = b"{}") -> tuple[int, bytes]:
    reply = await client.post(endpoint(up.url), f"{up.url}/chat/completions", {}, body)
    return reply.status, reply.body


async def test_sequential_calls_reuse_one_connection() -> None:
    client = HttpClient()
    async with upstream(lambda c, n, r: (ok(), False)) as up:
        for _ in range(3):
            assert await post(client, up) == (200, b'{"ok":true}')
        await client.aclose()
    assert up.connections == 1
    first = up.requests[0]
    assert first.startswith(b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost:")
    assert b"\r\nContent-Length: 2\r\n\r\n{}" in first


async def test_headers_are_sent_as_given_and_a_smuggled_line_is_refused_every_time() -> None:
    """The header lines are checked and encoded once per set of headers, and kept: the
    same set is sent the same way again, and a value carrying CR/LF is refused on every
    call (never sent), while a good set still goes out."""
    client = HttpClient()
    good = {"Authorization": "Bearer sk-good", "X-Title": "caf\xe9"}
    bad = {"Authorization": "Bearer sk-bad\r\nX-Injected: 1"}
    async with upstream(lambda c, n, r: (ok(), False)) as up:
        url = f"{up.url}/chat/completions"
        for _ in range(2):
            assert (await client.post(endpoint(up.url), url, good, b"{}")).status == 200
            with pytest.raises(AuthenticationError, match="cannot be sent"):
                await client.post(endpoint(up.url), url, bad, b"{}")
        await client.aclose()
    assert len(up.requests) == 2
    for request in up.requests:
        assert b"\r\nAuthorization: Bearer sk-good\r\nX-Title: caf\xe9\r\n" in request
        assert b"X-Injected" not in request


async def test_connection_close_answer_is_not_reused() -> None:
    client = HttpClient()
    async with upstream(lambda c, n, r: (ok(extra="Connection: close\r\n"), True)) as up:
        for _ in range(2):
            assert (await post(client, up))[0] == 200
        await client.aclose()
    assert up.connections == 2


async def test_a_post_the_upstream_read_is_never_sent_again() -> None:
    """The keep-alive race: the upstream reads the POST on a reused connection, then closes
    without answering. It may have acted on it, so the client does not send it again on a
    new connection (the runtime's counted retry decides): one POST per call reaches it."""

    def script(conn: int, n: int, request: bytes) -> tuple[bytes, bool]:
        return (b"", True) if (conn, n) == (0, 1) else (ok(), False)

    client = HttpClient()
    async with upstream(script) as up:
        assert (await post(client, up))[0] == 200
        with pytest.raises(UnavailableError, match="not re-sent"):
            await post(client, up)
        assert (await post(client, up))[0] == 200  # the next call gets a new connection
        await client.aclose()
    assert len(up.requests) == 3 and up.connections == 2


async def test_a_fresh_connection_closed_unanswered_is_unavailable() -> None:
    client = HttpClient()
    async with upstream(lambda c, n, r: (b"", True)) as up:
        with pytest.raises(UnavailableError):
            await post(client, up)
        await client.aclose()
    assert up.connections == 1  # no retry on a connection that was never reused


async def test_chunked_and_gzip_answers_are_decoded() -> None:
    payload = gzip.compress(b'{"answer":"' + b"x" * 5000 + b'"}')
    head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(payload[i : i + 700]), payload[i : i + 700])
        for i in range(0, len(payload), 700)
    )
    client = HttpClient()
    async with upstream(lambda c, n, r: (head + chunks + b"0\r\n\r\n", False)) as up:
        status, body = await post(client, up)
        await client.aclose()
    assert status == 200 and body == b'{"answer":"' + b"x" * 5000 + b'"}'
    assert b"Accept-Encoding: gzip, deflate" in up.requests[0]


async def test_close_delimited_body() -> None:
    answer = b'HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{"no":"length"}'
    client = HttpClient()
    async with upstream(lambda c, n, r: (answer, True)) as up:
        assert await post(client, up) == (200, b'{"no":"length"}')
        await client.aclose()


async def test_answer_cut_mid_body_is_a_protocol_error() -> None:
    cut = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{partial"
    client = HttpClient()
    async with upstream(lambda c, n, r: (cut, True)) as up:
        with pytest.raises(ProtocolError, match="connection lost mid-answer"):
            await post(client, up)
        await client.aclose()


async def test_garbage_instead_of_http_is_a_protocol_error() -> None:
    client = HttpClient()
    async with upstream(lambda c, n, r: (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", False)) as up:
        with pytest.raises(ProtocolError):
            await post(client, up)
        await client.aclose()


async def test_refused_connection_is_unavailable() -> None:
    async with upstream(lambda c, n, r: (ok(), False)) as up:
        url = up.url
    with pytest.raises(UnavailableError, match="cannot reach upstream"):
        await HttpClient().post(endpoint(url), f"{url}/chat/completions", {}, b"{}")


async def test_total_deadline_closes_the_connection() -> None:
    """An answer that never comes times out, and its connection is not handed out again."""

    def script(conn: int, n: int, request: bytes) -> tuple[bytes, bool]:
        return (b"", False) if conn == 0 else (ok(), False)

    client = HttpClient()
    async with upstream(script) as up:
        ep = endpoint(up.url, total_s=0.2)
        with pytest.raises(ProviderTimeoutError) as info:
            await client.post(ep, f"{up.url}/chat/completions", {}, b"{}")
        assert info.value.phase == "total"
        assert (await post(client, up))[0] == 200
        await client.aclose()
    assert up.connections == 2


async def test_warm_opens_the_connection_the_next_call_uses() -> None:
    client = HttpClient()
    async with upstream(lambda c, n, r: (ok(), False)) as up:
        await client.warm(endpoint(up.url), 2)
        await asyncio.sleep(0.05)
        assert up.connections == 2 and up.requests == []
        for _ in range(3):
            assert (await post(client, up))[0] == 200
        await client.aclose()
    assert up.connections == 2


async def test_streamed_lines_and_back_pressure() -> None:
    """A stream larger than the read-ahead bound pauses the socket and still arrives whole."""
    lines = [b"data: %d %s" % (i, b"y" * 200) for i in range(6000)]  # ~1.2 MB
    body = b"\n".join(lines) + b"\n"
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    framed = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    client = HttpClient()
    async with upstream(lambda c, n, r: (head + framed, False)) as up:
        ep = endpoint(up.url)
        reply = await client.open_stream(ep, f"{up.url}/chat/completions", {}, b"{}")
        await asyncio.sleep(0.2)  # let the socket fill the read-ahead
        conn = reply._conn
        # paused past READ_HIGH: at most one more socket read (256 KiB) arrived after that
        assert conn._buffered <= connection.READ_HIGH + 256 * 1024
        got = [line async for line in reply.lines()]
        reply.close()
        assert (await post(client, up))[0] == 200  # the drained connection is reused
        await client.aclose()
    assert got == lines and up.connections == 1


async def test_tls_with_the_trust_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """https:// verifies the server against the default trust store (SSL_CERT_FILE here)."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    client = HttpClient()
    async with upstream(lambda c, n, r: (ok(), False), tls=server_ctx) as up:
        connection.tls_context.cache_clear()
        try:
            with pytest.raises(UnavailableError):  # not trusted yet
                await post(client, up)
            monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
            connection.tls_context.cache_clear()
            assert await post(client, up) == (200, b'{"ok":true}')
        finally:
            await client.aclose()
            connection.tls_context.cache_clear()


# ---------------------------------------------------------------- proxies from the environment


@pytest.fixture
def clean_proxy_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    proxy.route.cache_clear()
    yield monkeypatch
    proxy.route.cache_clear()


async def test_https_goes_through_the_proxys_tunnel(
    tmp_path: Path, clean_proxy_env: pytest.MonkeyPatch
) -> None:
    """HTTPS_PROXY: CONNECT (with the URL's credentials), then TLS to the provider inside.

    The provider is `provider.test`, resolved to the loopback fake by the proxy (loopback
    names themselves are never proxied)."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("provider.test").configure_cert(server_ctx)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    clean_proxy_env.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    connection.tls_context.cache_clear()
    client = HttpClient()
    try:
        async with (
            upstream(lambda c, n, r: (ok(), False), tls=server_ctx) as up,
            connect_proxy() as (port, seen),
        ):
            clean_proxy_env.setenv("HTTPS_PROXY", f"http://user:p%40ss@127.0.0.1:{port}")
            authority = "provider.test:" + up.url.rsplit(":", 1)[1].split("/")[0]
            url = f"https://{authority}/v1"
            for _ in range(2):
                reply = await client.post(endpoint(url), f"{url}/chat/completions", {}, b"{}")
                assert (reply.status, reply.body) == (200, b'{"ok":true}')
            await client.aclose()
        assert len(seen) == 1  # one tunnel, kept alive for both calls
        assert seen[0].startswith(f"CONNECT {authority} HTTP/1.1\r\n".encode())
        assert b"Proxy-Authorization: Basic dXNlcjpwQHNz\r\n" in seen[0]  # user:p@ss
        assert up.connections == 1 and up.requests[0].startswith(b"POST /v1/chat/completions ")
    finally:
        connection.tls_context.cache_clear()


async def test_a_refused_tunnel_is_unavailable(clean_proxy_env: pytest.MonkeyPatch) -> None:
    async with connect_proxy(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n") as (port, _):
        clean_proxy_env.setenv("HTTPS_PROXY", f"http://127.0.0.1:{port}")
        url = "https://provider.example/v1"
        with pytest.raises(UnavailableError, match="cannot reach upstream"):
            await HttpClient().post(endpoint(url), f"{url}/chat/completions", {}, b"{}")


async def test_plain_http_is_sent_to_the_proxy_in_absolute_form(
    clean_proxy_env: pytest.MonkeyPatch,
) -> None:
    client = HttpClient()
    async with upstream(lambda c, n, r: (ok(), False)) as proxy_server:
        port = proxy_server.url.split(":")[2].split("/")[0]
        clean_proxy_env.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
        url = "http://ollama.internal:11434/api"
        reply = await client.post(endpoint(url), f"{url}/chat", {}, b"{}")
        await client.aclose()
    assert reply.status == 200
    first = proxy_server.requests[0]
    assert first.startswith(b"POST http://ollama.internal:11434/api/chat HTTP/1.1\r\n")
    assert b"\r\nHost: ollama.internal:11434\r\n" in first


async def test_no_proxy_and_loopback_go_direct(clean_proxy_env: pytest.MonkeyPatch) -> None:
    clean_proxy_env.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    client = HttpClient()
    async with upstream(lambda c, n, r: (ok(), False)) as up:
        assert (await post(client, up))[0] == 200  # localhost: never proxied
        await client.aclose()
    assert proxy.route("http://provider.test/v1")[0].host == "127.0.0.1"  # proxied
    clean_proxy_env.setenv("NO_PROXY", "provider.test")
    proxy.route.cache_clear()
    assert proxy.route("http://provider.test/v1")[0].host == "provider.test"  # exempted


async def test_bytes_on_an_idle_connection_retire_it() -> None:
    """An upstream that says something between requests (a 408 before closing an idle
    connection) gets the next request on a fresh connection, not a confused parser."""
    timeout = b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n"
    client = HttpClient()
    async with upstream(lambda c, n, r: (ok() + timeout, False)) as up:
        assert (await post(client, up))[0] == 200
        await asyncio.sleep(0.05)  # the stray answer arrives while the connection is idle
        assert await post(client, up) == (200, b'{"ok":true}')
        await client.aclose()
    assert up.connections == 2

"""Proxy URL schemes from the environment: https:// (TLS to the proxy) and socks5(h)://
reach the provider; any other scheme fails with an error naming it.

Every test runs on the standard event loop and on uvloop (the server's loop), since TLS
inside a TLS tunnel and the SOCKS handshake use different code on each.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
import uvloop

from engine.errors import UnavailableError
from engine.providers import connection, proxy
from engine.providers.http import HttpClient

from .wire import answering, connect_proxy, endpoint, ok, serve, socks5_proxy

pytestmark = pytest.mark.filterwarnings("ignore:Overriding the .event_loop_policy. fixture")


@pytest.fixture(params=["asyncio", "uvloop"])
def event_loop_policy(request: pytest.FixtureRequest) -> asyncio.AbstractEventLoopPolicy:
    if request.param == "uvloop":
        return uvloop.EventLoopPolicy()
    return asyncio.DefaultEventLoopPolicy()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    proxy.route.cache_clear()
    connection.tls_context.cache_clear()
    yield monkeypatch
    proxy.route.cache_clear()
    connection.tls_context.cache_clear()


@pytest.fixture
def certs(env: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, ssl.SSLContext]:
    """Server contexts for `localhost` (the proxy) and `provider.test`, from one CA that the
    client trusts through SSL_CERT_FILE."""
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    env.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    contexts = {}
    for name in ("localhost", "provider.test"):
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(name).configure_cert(ctx)
        contexts[name] = ctx
    return contexts


async def call(client: HttpClient, url: str) -> tuple[int, bytes]:
    reply = await client.post(endpoint(url), f"{url}/chat/completions", {}, b"{}")
    return reply.status, reply.body


async def test_https_proxy_tunnels_tls_inside_tls(
    env: pytest.MonkeyPatch, certs: dict[str, ssl.SSLContext]
) -> None:
    """HTTPS_PROXY=https://...: TLS to the proxy, CONNECT, TLS to the provider inside."""
    client = HttpClient()
    async with (
        serve(answering(ok()), tls=certs["provider.test"], host="provider.test") as up,
        connect_proxy(tls=certs["localhost"]) as (port, seen),
    ):
        env.setenv("HTTPS_PROXY", f"https://user:secret@localhost:{port}")
        for _ in range(2):
            assert await call(client, up.url) == (200, b'{"ok":true}')
        await client.aclose()
    assert len(seen) == 1 and seen[0].startswith(b"CONNECT provider.test:")
    assert b"Proxy-Authorization: Basic dXNlcjpzZWNyZXQ=\r\n" in seen[0]
    assert up.connections == 1


async def test_https_proxy_takes_plain_http_requests_over_tls(
    env: pytest.MonkeyPatch, certs: dict[str, ssl.SSLContext]
) -> None:
    client = HttpClient()
    async with serve(answering(ok()), tls=certs["localhost"]) as the_proxy:
        env.setenv("HTTP_PROXY", f"https://localhost:{the_proxy.port}")
        assert (await call(client, "http://ollama.internal:11434/api"))[0] == 200
        await client.aclose()
    assert the_proxy.requests[0].startswith(b"POST http://ollama.internal:11434/api/chat")


async def test_socks5h_tunnel_with_credentials_and_tls_inside(
    env: pytest.MonkeyPatch, certs: dict[str, ssl.SSLContext]
) -> None:
    """socks5h://: the proxy resolves the provider's name; TLS to the provider inside."""
    client = HttpClient()
    async with (
        serve(answering(ok()), tls=certs["provider.test"], host="provider.test") as up,
        socks5_proxy((b"user", b"p@ss")) as (port, seen),
    ):
        env.setenv("ALL_PROXY", f"socks5h://user:p%40ss@127.0.0.1:{port}")
        for _ in range(2):
            assert await call(client, up.url) == (200, b'{"ok":true}')
        await client.aclose()
    assert seen == [("provider.test", up.port)]


async def test_socks5_resolves_names_here(env: pytest.MonkeyPatch) -> None:
    """socks5:// (no h): the client resolves the name and sends the proxy an address."""
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo

    async def getaddrinfo(host: Any, port: Any, *args: Any, **kw: Any) -> Any:
        return await real("127.0.0.1" if host == "provider.test" else host, port, *args, **kw)

    env.setattr(loop, "getaddrinfo", getaddrinfo)
    client = HttpClient()
    async with serve(answering(ok()), host="provider.test") as up, socks5_proxy() as (port, seen):
        env.setenv("HTTP_PROXY", f"socks5://127.0.0.1:{port}")
        assert await call(client, up.url) == (200, b'{"ok":true}')
        await client.aclose()
    assert seen == [("127.0.0.1", up.port)]


async def test_a_socks_refusal_is_unavailable(env: pytest.MonkeyPatch) -> None:
    async with socks5_proxy((b"user", b"right")) as (port, _):
        env.setenv("HTTPS_PROXY", f"socks5h://user:wrong@127.0.0.1:{port}")
        with pytest.raises(UnavailableError, match="cannot reach upstream"):
            await call(HttpClient(), "https://provider.test/v1")


@pytest.mark.parametrize("scheme", ["ftp", "quic"])
async def test_an_unsupported_proxy_scheme_is_named(env: pytest.MonkeyPatch, scheme: str) -> None:
    env.setenv("HTTPS_PROXY", f"{scheme}://proxy.internal:3128")
    with pytest.raises(UnavailableError) as info:
        await call(HttpClient(), "https://provider.test/v1")
    message = str(info.value)
    assert f"unsupported proxy scheme '{scheme}' in HTTPS_PROXY" in message
    assert "socks5://" in message  # says what would work


def test_proxy_credentials_stay_out_of_reprs(env: pytest.MonkeyPatch) -> None:
    env.setenv("HTTPS_PROXY", "socks5h://user:s3cret-pw@proxy.internal:1080")
    _, via = proxy.route("https://provider.test/v1")
    assert via is not None and via.password == "s3cret-pw"
    assert "s3cret" not in repr(via) and "Basic" not in repr(via)

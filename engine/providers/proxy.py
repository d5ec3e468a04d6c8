"""Reaching providers through the proxy that the standard environment variables name.

`HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` (either case) and `NO_PROXY` are read the way
every HTTP client reads them, by the standard library's own `urllib.request` functions.
Loopback hosts are always reached directly. Proxy URL schemes:

    http://    plain TCP to the proxy
    https://   TLS to the proxy (verified against the trust store like any upstream)
    socks5://  a SOCKS5 tunnel, the provider's name resolved here; socks5h:// by the proxy
    socks4://  likewise SOCKS4 (socks4a:// resolved by the proxy)

An https provider behind an http(s) proxy is reached through a `CONNECT` tunnel with TLS to
the provider inside it (the proxy sees neither the key nor the prompt); a plain-http one (an
Ollama on another host, say) gets its requests in absolute form from the proxy. Behind a
SOCKS proxy every provider is a tunnel (python-socks does the handshake). Credentials in the
proxy URL go out as `Proxy-Authorization: Basic` or as SOCKS credentials. Any other scheme
is refused with an error naming it, on every call that would have used it.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
from dataclasses import dataclass, field, replace
from functools import lru_cache
from urllib.parse import unquote, urlsplit
from urllib.request import getproxies_environment, proxy_bypass

import python_socks
from python_socks.async_.asyncio import Proxy as SocksProxy

from .connection import Connection, Target, target_of, tls_context
from .dial import attach, direct, open_socket
from .pool import Dial

__all__ = ["SCHEMES", "Proxy", "ProxyError", "UnsupportedProxy", "dialer", "route"]

#: Proxy URL schemes understood here.
SCHEMES = ("http", "https", "socks5", "socks5h", "socks4", "socks4a")


class ProxyError(OSError):
    """The proxy refused or garbled the tunnel (an OSError: the upstream is unreachable)."""


class UnsupportedProxy(ValueError):
    """The environment names a proxy this client cannot use (the message names why)."""


@dataclass(frozen=True, slots=True)
class Proxy:
    """A proxy from the environment; its credentials are kept out of its repr."""

    scheme: str
    host: str
    port: int
    #: the Proxy-Authorization value, when the URL had credentials
    authorization: str | None = field(default=None, repr=False)
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)


@lru_cache(maxsize=1024)  # environment read once per URL; tests clear it with cache_clear()
def route(url: str) -> tuple[Target, Proxy | None]:
    """Where a request for `url` connects: its target, and the proxy to tunnel through.

    Raises UnsupportedProxy when the proxy variable that applies cannot be used."""
    target = target_of(url)
    proxies = getproxies_environment()
    proxy_url = proxies.get("https" if target.tls else "http") or proxies.get("all")
    if not proxy_url or _loopback(target.host) or proxy_bypass(target.host):
        return target, None
    proxy = _parse(proxy_url, "HTTPS_PROXY" if target.tls else "HTTP_PROXY")
    if target.tls or proxy.scheme not in ("http", "https"):
        return target, proxy
    # Plain http: the proxy takes the request itself, with the target in absolute form.
    auth = f"Proxy-Authorization: {proxy.authorization}\r\n" if proxy.authorization else ""
    method, path, rest = target.head.split(b" ", 2)
    origin = target.origin.encode("latin-1")
    head = b"%s %s%s %s%s" % (method, origin, path, rest, auth.encode("latin-1"))
    via = f"{target.origin} via {proxy.scheme}://{proxy.host}:{proxy.port}"
    tls = proxy.scheme == "https"
    return replace(target, origin=via, host=proxy.host, port=proxy.port, tls=tls, head=head), None


def _loopback(host: str) -> bool:
    """A proxy cannot reach this machine's own loopback, so it is never asked to (as Go's
    net/http does too): local models and test fakes stay direct whatever the environment."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _parse(url: str, variable: str) -> Proxy:
    parts = urlsplit(url if "://" in url else f"http://{url}")
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise UnsupportedProxy(
            f"unsupported proxy scheme {scheme!r} in {variable} "
            f"(supported: {', '.join(s + '://' for s in SCHEMES)})"
        )
    if not parts.hostname:
        raise UnsupportedProxy(f"the proxy URL in {variable} names no host")
    user = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password or "") if user is not None else None
    auth = None
    if user is not None:
        pair = f"{user}:{password}"
        auth = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
    default_port = {"http": 80, "https": 443}.get(scheme, 1080)
    return Proxy(scheme, parts.hostname, parts.port or default_port, auth, user, password)


def dialer(loop: asyncio.AbstractEventLoop, target: Target, proxy: Proxy | None) -> Dial:
    """How a pool for `target` opens its connections (directly or through `proxy`)."""
    if proxy is None:
        return direct(loop, target)
    if proxy.scheme.startswith("socks"):
        return _socks(loop, proxy, target)
    return _connect_tunnel(loop, proxy, target)


def _socks(loop: asyncio.AbstractEventLoop, proxy: Proxy, target: Target) -> Dial:
    kind = python_socks.ProxyType.SOCKS5 if "5" in proxy.scheme else python_socks.ProxyType.SOCKS4
    rdns = proxy.scheme.endswith(("h", "a"))  # socks5h / socks4a: the proxy resolves names
    socks = SocksProxy(
        kind, proxy.host, proxy.port, proxy.username, proxy.password, rdns, loop=loop
    )

    async def dial(conn: Connection) -> None:
        try:
            sock = await socks.connect(target.host, target.port)
        except python_socks.ProxyError as exc:  # refused by the proxy: not an OSError itself
            raise ProxyError(f"SOCKS proxy refused the tunnel: {exc}") from None
        await attach(loop, conn, sock, target.host if target.tls else None)

    return dial


class _Handshake(asyncio.Protocol):
    """Reads the proxy's answer to CONNECT (headers only; a 200 carries no body)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.answer: asyncio.Future[bytes] = loop.create_future()
        self._data = b""

    def data_received(self, data: bytes) -> None:
        self._data += data
        if b"\r\n\r\n" in self._data and not self.answer.done():
            self.answer.set_result(self._data)
        elif len(self._data) > 64 * 1024 and not self.answer.done():
            self.answer.set_exception(ProxyError("the proxy's CONNECT answer is too large"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.answer.done():
            self.answer.set_exception(ProxyError("the proxy closed the tunnel"))


def _connect_tunnel(loop: asyncio.AbstractEventLoop, proxy: Proxy, target: Target) -> Dial:
    """CONNECT through an http(s) proxy, then TLS to the target inside the tunnel."""
    authority = f"{target.host}:{target.port}"
    request = f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n"
    if proxy.authorization:
        request += f"Proxy-Authorization: {proxy.authorization}\r\n"
    data = (request + "\r\n").encode("latin-1")
    to_proxy = proxy.host if proxy.scheme == "https" else None

    async def dial(conn: Connection) -> None:
        sock = await open_socket(loop, proxy.host, proxy.port)
        handshake = _Handshake(loop)
        try:
            transport, _ = await loop.create_connection(
                lambda: handshake,
                sock=sock,
                ssl=tls_context() if to_proxy else None,
                server_hostname=to_proxy,
            )
        except BaseException:
            sock.close()
            raise
        try:
            transport.write(data)
            _check(await handshake.answer)
            secure = await loop.start_tls(
                transport, conn, tls_context(), server_hostname=target.host
            )
        except BaseException:
            transport.close()
            raise
        assert secure is not None
        conn.connection_made(secure)

    return dial


def _check(answer: bytes) -> None:
    status = answer.split(b"\r\n", 1)[0].split(b" ")
    if len(status) < 2 or status[1] != b"200":
        line = answer.split(b"\r\n", 1)[0].decode("latin-1", "replace")[:80]
        raise ProxyError(f"proxy refused the tunnel: {line}")

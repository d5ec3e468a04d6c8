"""Reaching providers through the HTTP proxy that the standard environment variables name.

`HTTPS_PROXY` / `HTTP_PROXY` (either case) and `NO_PROXY` are read the way every HTTP
client reads them, by the standard library's own `urllib.request` functions. An https
provider is reached through a `CONNECT` tunnel with TLS to the provider inside it (the proxy
sees neither the key nor the prompt); a plain-http one (an Ollama on another host, say, when
NO_PROXY does not exempt it) gets its requests in absolute form from the proxy. Loopback
hosts are always reached directly. Credentials in the
proxy URL go out as `Proxy-Authorization: Basic`. Only http:// proxies are supported.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
from dataclasses import dataclass, replace
from functools import lru_cache
from urllib.parse import unquote, urlsplit
from urllib.request import getproxies_environment, proxy_bypass

from .connection import Target, target_of

__all__ = ["Proxy", "ProxyError", "open_tunnel", "route"]


class ProxyError(OSError):
    """The proxy refused or garbled the tunnel (an OSError: the upstream is unreachable)."""


@dataclass(frozen=True, slots=True)
class Proxy:
    host: str
    port: int
    authorization: str | None  # the Proxy-Authorization value, when the URL had credentials


@lru_cache(maxsize=1024)  # environment read once per URL; tests clear it with cache_clear()
def route(url: str) -> tuple[Target, Proxy | None]:
    """Where a request for `url` connects: its target, and the proxy to tunnel through."""
    target = target_of(url)
    proxies = getproxies_environment()
    proxy_url = proxies.get("https" if target.tls else "http")
    if not proxy_url or _loopback(target.host) or proxy_bypass(target.host):
        return target, None
    proxy = _parse(proxy_url)
    if target.tls:
        return target, proxy
    # Plain http: the proxy takes the request itself, with the target in absolute form.
    auth = f"Proxy-Authorization: {proxy.authorization}\r\n" if proxy.authorization else ""
    method, path, rest = target.head.split(b" ", 2)
    origin = target.origin.encode("latin-1")
    head = b"%s %s%s %s%s" % (method, origin, path, rest, auth.encode("latin-1"))
    via = f"{target.origin} via {proxy.host}:{proxy.port}"
    return replace(target, origin=via, host=proxy.host, port=proxy.port, head=head), None


def _loopback(host: str) -> bool:
    """A proxy cannot reach this machine's own loopback, so it is never asked to (as Go's
    net/http does too): local models and test fakes stay direct whatever the environment."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _parse(url: str) -> Proxy:
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"unsupported proxy {parts.scheme}://{parts.hostname or ''}")
    auth = None
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        auth = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
    return Proxy(parts.hostname, parts.port or 80, auth)


class _Handshake(asyncio.Protocol):
    """Reads the proxy's answer to CONNECT (headers only; a 200 carries no body)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.answer: asyncio.Future[bytes] = loop.create_future()
        self._data = b""

    def data_received(self, data: bytes) -> None:
        self._data += data
        if b"\r\n\r\n" in self._data and not self.answer.done():
            self.answer.set_result(self._data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.answer.done():
            self.answer.set_exception(ProxyError("the proxy closed the tunnel"))


async def open_tunnel(
    loop: asyncio.AbstractEventLoop,
    proxy: Proxy,
    target: Target,
    protocol: asyncio.Protocol,
    tls: object,
) -> asyncio.BaseTransport:
    """A TLS transport to `target` through `proxy`, delivering to `protocol` (already told
    of its transport). `tls` is the SSL context for the target."""
    transport, handshake = await loop.create_connection(
        lambda: _Handshake(loop), proxy.host, proxy.port
    )
    authority = f"{target.host}:{target.port}"
    request = f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n"
    if proxy.authorization:
        request += f"Proxy-Authorization: {proxy.authorization}\r\n"
    transport.write((request + "\r\n").encode("latin-1"))
    try:
        answer = await handshake.answer
        status = answer.split(b"\r\n", 1)[0].split(b" ")
        if len(status) < 2 or status[1] != b"200":
            line = answer.split(b"\r\n", 1)[0].decode("latin-1", "replace")[:80]
            raise ProxyError(f"proxy refused the tunnel: {line}")
        secure = await loop.start_tls(
            transport,
            protocol,
            tls,  # type: ignore[arg-type]
            server_hostname=target.host,
        )
    except BaseException:
        transport.close()
        raise
    assert secure is not None
    protocol.connection_made(secure)
    return secure

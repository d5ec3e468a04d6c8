"""An answer's status line and headers, written as uvicorn writes them, checked in bulk.

uvicorn's `RequestResponseCycle.send` checks every header of every answer on its own: two
regular-expression searches per header (a bad name or a CR/LF in a value would split the
answer), then a lower-casing and three comparisons, in a Python loop. With the engine's
dozen answer headers the regex scans alone cost 23k instructions a request, ~3% of a
proxied call; this module's way took one callgrind count from 741k to 718k instructions a
request (bench.instructions measures the same).

`HeadSend` writes the same bytes and leaves uvicorn's cycle in the same state, but checks
all names at once and all values at once: each set is joined and scanned by one C call
(`bytes.translate` marking each refused byte, then one search for a mark). It
takes this path only for a head whose names are lower case and that frames its body in the
simple way (at most one content-length, no transfer-encoding or connection header); any
other head, and any head with a forbidden byte, goes through uvicorn's own `send`, which
writes it or raises its own error. tests/server/test_head.py holds the two to the same
bytes and state.

uvicorn builds the cycle inline in `on_headers_complete` (there is no factory to pass), so
the protocol hands the app a `HeadSend` over the cycle instead (`with_head_send`).
"""

from __future__ import annotations

from typing import Any

from uvicorn._types import ASGI3Application, ASGIReceiveCallable, ASGISendEvent, Scope
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, RequestResponseCycle

__all__ = ["HeadSend", "plain_head", "with_head_send"]

#: What uvicorn refuses in a header name (its HEADER_RE) and in a value (HEADER_VALUE_RE),
#: as `bytes.translate` tables that turn each refused byte into 1 and every other into 0.
#: Upper case is marked in names too: uvicorn lower-cases a name, so it writes that head.
_REFUSED_IN_NAMES = bytes(
    b < 0x20 or b == 0x7F or chr(b) in '()<>@,;:[]={} \t\\"' or 0x41 <= b <= 0x5A
    for b in range(256)
)
_REFUSED_IN_VALUES = bytes((b < 0x20 and b != 0x09) or b == 0x7F for b in range(256))
_CONTENT_LENGTH = b"content-length"


class HeadSend:
    """The `send` an app gets from uvicorn's cycle, writing a plain answer head itself (see
    the module docstring) and handing every other message to the cycle's own `send`."""

    __slots__ = ("_cycle",)

    def __init__(self, cycle: RequestResponseCycle) -> None:
        self._cycle = cycle

    async def __call__(self, message: ASGISendEvent) -> None:
        cycle = self._cycle
        if (
            message["type"] != "http.response.start"
            or cycle.response_started
            or cycle.disconnected
            or cycle.flow.write_paused
            or cycle.access_log
        ):
            return await cycle.send(message)
        head = plain_head(
            cycle, message["status"], [*cycle.default_headers, *message.get("headers", ())]
        )
        if head is None:
            return await cycle.send(message)
        cycle.response_started = True
        cycle.waiting_for_100_continue = False
        cycle.transport.write(head)


def plain_head(
    cycle: RequestResponseCycle, status: int, headers: list[tuple[bytes, bytes]]
) -> bytes | None:
    """The head uvicorn's `cycle` would write for these headers (its framing state set as
    uvicorn sets it), or None when uvicorn must judge them (a name not in lower case,
    unusual framing, a forbidden byte)."""
    if not headers:
        return None
    names, values = zip(*headers, strict=True)
    if (
        1 in b"".join(names).translate(_REFUSED_IN_NAMES)
        or 1 in b"".join(values).translate(_REFUSED_IN_VALUES)
        or b"transfer-encoding" in names
        or b"connection" in names
        or names.count(_CONTENT_LENGTH) > 1
    ):
        return None
    fields = b"\r\n".join(map(b": ".join, zip(names, values, strict=True)))
    lines = [STATUS_LINE[status], fields, b"\r\n"]
    if _CONTENT_LENGTH in names:
        cycle.expected_content_length = int(values[names.index(_CONTENT_LENGTH)].decode())
        cycle.chunked_encoding = False
    if not cycle.keep_alive:
        lines.append(b"connection: close\r\n")
    bodiless = cycle.scope["method"] == "HEAD" or status in (204, 304)
    if cycle.chunked_encoding is None and not bodiless:
        cycle.chunked_encoding = True
        lines.append(b"transfer-encoding: chunked\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


def with_head_send(app: ASGI3Application, cycle: RequestResponseCycle) -> ASGI3Application:
    """`app`, given a `HeadSend` over `cycle` instead of the cycle's own `send`."""
    send = HeadSend(cycle)

    async def app_with_head_send(scope: Scope, receive: ASGIReceiveCallable, _: Any) -> None:
        await app(scope, receive, send)

    return app_with_head_send

"""HeadSend writes exactly the head uvicorn's own cycle writes, leaves the same state, and
refuses what uvicorn refuses (by letting uvicorn judge it)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HEADER_RE, HEADER_VALUE_RE, RequestResponseCycle

from engine.server.head import _REFUSED_IN_NAMES, _REFUSED_IN_VALUES, HeadSend
from tests.server.conftest import Running

_DATE = [(b"date", b"Thu, 03 Dec 2026 06:35:54 GMT")]
#: What the chat route answers with (names and shapes of the engine's own headers).
_ENGINE = [
    (b"x-engine-provider", b"primary"),
    (b"x-engine-model", b"gpt-4o-mini"),
    (b"x-engine-attempts", b"1"),
    (b"x-engine-cache", b"miss"),
    (b"x-engine-cost-usd", b"0.00001200"),
    (b"x-engine-cost-breakdown", b"input=0.00000100, cache_read=0.00000000, output=0.00001100"),
    (b"x-engine-policy", b"chat"),
    (b"content-length", b"2"),
    (b"content-type", b"application/json"),
    (b"x-request-id", b"0123456789abcdef01234567"),
]


class _Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _cycle(method: str = "POST", keep_alive: bool = True, defaults: Any = None) -> Any:
    transport = _Transport()
    logger = logging.getLogger("test.head")
    return RequestResponseCycle(
        scope={"type": "http", "method": method, "headers": []},  # type: ignore[typeddict-item]
        transport=transport,  # type: ignore[arg-type]
        flow=FlowControl(transport),  # type: ignore[arg-type]
        logger=logger,
        access_logger=logger,
        access_log=False,
        default_headers=_DATE if defaults is None else defaults,
        message_event=asyncio.Event(),
        expect_100_continue=False,
        keep_alive=keep_alive,
        on_response=lambda: None,
    )


_STATE = ("response_started", "chunked_encoding", "expected_content_length", "keep_alive")


async def _both(message: dict[str, Any], **kwargs: Any) -> tuple[Any, Any]:
    """What uvicorn's cycle and a HeadCycle each wrote and became (or raised)."""
    out = []
    for head in (False, True):
        cycle = _cycle(**kwargs)
        send = HeadSend(cycle) if head else cycle.send
        try:
            await send(message)
            await send({"type": "http.response.body", "body": b"{}"})
            result: Any = (cycle.transport.written, [getattr(cycle, a) for a in _STATE])
        except Exception as exc:
            result = (type(exc), str(exc))
        out.append(result)
    return out[0], out[1]


HEADS = {
    "engine answer": (200, _ENGINE),
    "no headers (chunked)": (200, []),
    "event stream (chunked)": (200, [(b"content-type", b"text/event-stream")]),
    "no body status": (204, [(b"x-request-id", b"abc")]),
    "not modified": (304, []),
    "error answer": (429, [(b"retry-after", b"2"), (b"content-length", b"2")]),
    "upper-case name": (200, [(b"X-Request-Id", b"abc"), (b"content-length", b"2")]),
    "tab in a value": (200, [(b"x-a", b"a\tb"), (b"content-length", b"2")]),
    "own connection header": (200, [(b"connection", b"close"), (b"content-length", b"2")]),
    "own chunked framing": (200, [(b"transfer-encoding", b"chunked")]),
    "two lengths": (200, [(b"content-length", b"2"), (b"content-length", b"3")]),
    "bad name": (200, [(b"x bad", b"v"), (b"content-length", b"2")]),
    "CRLF in a value": (200, [(b"x-a", b"v\r\nset-cookie: evil"), (b"content-length", b"2")]),
    "NUL in a name": (200, [(b"x-\x00", b"v")]),
    "length not a number": (200, [(b"content-length", b"two")]),
    "body longer than its length": (200, [(b"content-length", b"1")]),
    "list pairs": (200, [[b"content-length", b"2"], [b"x-a", b"b"]]),
}


@pytest.mark.parametrize("name", list(HEADS))
@pytest.mark.parametrize("method", ["POST", "HEAD"])
@pytest.mark.parametrize("keep_alive", [True, False])
async def test_the_same_bytes_and_state_as_uvicorn(
    name: str, method: str, keep_alive: bool
) -> None:
    status, headers = HEADS[name]
    message = {"type": "http.response.start", "status": status, "headers": headers}
    theirs, ours = await _both(message, method=method, keep_alive=keep_alive)
    assert ours == theirs


async def test_configured_default_headers_are_checked_too() -> None:
    """uvicorn's own defaults (the date, `--header` values) are part of the checked head."""
    message = {"type": "http.response.start", "status": 200, "headers": _ENGINE}
    for defaults in ([(b"date", b"x"), (b"x-site", b"eu")], [(b"x-site", b"a\nb")], []):
        theirs, ours = await _both(message, defaults=defaults)
        assert ours == theirs


async def test_the_engines_answers_take_the_bulk_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The chat route's head never reaches uvicorn's per-header loop (if it did, this whole
    module would be dead weight)."""

    async def refuse(self: Any, message: Any) -> None:
        raise AssertionError(f"uvicorn's send was used for {message['type']}")

    cycle = _cycle()
    monkeypatch.setattr(RequestResponseCycle, "send", refuse)
    await HeadSend(cycle)({"type": "http.response.start", "status": 200, "headers": _ENGINE})
    assert cycle.transport.written[0].startswith(b"HTTP/1.1 200 OK\r\ndate: ")
    assert cycle.expected_content_length == 2 and cycle.chunked_encoding is False


async def test_the_server_writes_its_chat_answers_through_it(
    server: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In the real protocol: a chat answer's head does not pass uvicorn's per-header loop,
    and the client reads the same answer (headers, framing, keep-alive) as before."""
    starts: list[int] = []
    uvicorn_send = RequestResponseCycle.send

    async def counting(self: Any, message: Any) -> None:
        if message["type"] == "http.response.start":
            starts.append(message["status"])
        await uvicorn_send(self, message)

    monkeypatch.setattr(RequestResponseCycle, "send", counting)
    # uvicorn logs access (and leaves the head to its own loop) when its access logger has
    # handlers; `engine serve` leaves it none, pytest's log capture gives it some.
    monkeypatch.setattr(logging.getLogger("uvicorn.access"), "handlers", [])
    body = {"model": "fast", "messages": [{"role": "user", "content": "hi"}]}
    async with server.http() as http:
        for _ in range(2):  # the second on the same kept-alive connection
            r = await http.post("/v1/chat/completions", json=body)
            assert r.status_code == 200 and r.json()["object"] == "chat.completion"
            assert r.headers["x-engine-provider"] and r.headers["x-request-id"]
            assert int(r.headers["content-length"]) == len(r.content)
        missing = await http.get("/v1/nothing-here")
    assert missing.status_code == 404
    assert starts == []  # neither chat answer nor starlette's 404 needed uvicorn's loop


def test_it_refuses_exactly_the_bytes_uvicorn_refuses() -> None:
    """Byte for byte, the bulk check's tables agree with uvicorn's two expressions (and
    leave a name with upper case to uvicorn, which lower-cases it)."""
    for b in range(256):
        one = bytes([b])
        assert _REFUSED_IN_NAMES[b] == bool(HEADER_RE.search(one) or one.isupper()), hex(b)
        assert _REFUSED_IN_VALUES[b] == bool(HEADER_VALUE_RE.search(one)), hex(b)

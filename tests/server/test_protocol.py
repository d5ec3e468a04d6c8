"""CoalescingTransport: a response's head leaves with its body, and is never left behind."""

from __future__ import annotations

import asyncio
from typing import Any

from engine.server.protocol import CoalescingTransport


class _Recorder:
    """The transport calls the wrapper makes, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.calls.append(("write", bytes(data)))

    def writelines(self, data: Any) -> None:
        self.calls.append(("writelines", b"".join(data)))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True
        self.calls.append(("close", None))

    def get_write_buffer_size(self) -> int:
        return 7


async def test_head_and_body_leave_in_one_call() -> None:
    """The head is held and sent together with the body that follows it."""
    real = _Recorder()
    t = CoalescingTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    assert real.calls == []
    t.write(b"ok")
    assert real.calls == [("writelines", b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")]
    await asyncio.sleep(0)  # the scheduled flush finds nothing left to send
    assert len(real.calls) == 1


async def test_a_lone_head_is_sent_at_the_next_loop_iteration() -> None:
    """A head whose body comes later (a slow stream) still leaves at once."""
    real = _Recorder()
    t = CoalescingTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    t.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
    await asyncio.sleep(0)
    assert real.calls == [("write", b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")]
    t.write(b"5\r\nhello\r\n")
    assert real.calls[-1] == ("write", b"5\r\nhello\r\n")


async def test_close_sends_a_held_head_first_and_a_closed_socket_gets_nothing() -> None:
    """close() flushes before closing; a head held when the socket closed is dropped."""
    real = _Recorder()
    t = CoalescingTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    t.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    t.close()
    assert real.calls == [("write", b"HTTP/1.1 400 Bad Request\r\n\r\n"), ("close", None)]
    t.write(b"HTTP/1.1 200 OK\r\n\r\n")
    await asyncio.sleep(0)
    assert real.calls[-1] == ("close", None)


async def test_other_writes_and_calls_pass_through() -> None:
    """Bytes that do not start a response, and the rest of the API, go straight through."""
    real = _Recorder()
    t = CoalescingTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    t.write(b"data: x\n\n")
    assert real.calls == [("write", b"data: x\n\n")]
    assert t.get_write_buffer_size() == 7 and not t.is_closing()

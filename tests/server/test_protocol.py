"""CoalescingTransport: a response's head leaves with its body in one call, at once; with a
store that holds writes for before an answer (engine/state/before_answer.py), what a loop
turn writes leaves at its end in one call, after what the stores hold, and never later."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import hiredis
import pytest

from engine.server.protocol import CoalescingTransport
from engine.state import before_answer
from engine.state.redis_bookings import TurnBookings
from engine.state.redis_scripts import _Wire


class _Recorder:
    """The transport calls the wrapper makes, in order."""

    def __init__(self, calls: list[tuple[str, Any]] | None = None) -> None:
        self.calls: list[tuple[str, Any]] = [] if calls is None else calls
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

    def abort(self) -> None:
        self.close()

    def get_write_buffer_size(self) -> int:
        return 7


@pytest.fixture
def holding_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """A store of this process holds writes for before an answer (as a Redis budget does)."""
    monkeypatch.setattr(before_answer, "_holders", True)


async def test_a_head_leaves_with_its_body_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """No store holds writes: head and body go in one call as the body is written (no loop
    turn between the provider's reply and the client's answer); a stream's chunks pass
    straight through; a head with no body in its step leaves at the end of the turn."""
    monkeypatch.setattr(before_answer, "_holders", False)  # what an earlier test's store said
    real = _Recorder()
    t = CoalescingTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    assert real.calls == []
    t.write(bytearray(b"ok"))
    assert real.calls == [("writelines", b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")]
    t.write(b"data: 1\n\n")
    assert real.calls[-1] == ("write", b"data: 1\n\n")
    t.write(b"HTTP/1.1 200 OK\r\n\r\n")
    await asyncio.sleep(0)
    assert real.calls[-1] == ("writelines", b"HTTP/1.1 200 OK\r\n\r\n") and len(real.calls) == 3


@pytest.mark.usefixtures("holding_store")
async def test_a_turns_writes_leave_together_at_its_end() -> None:
    """Head and body (and anything else the turn writes) leave in one call, next turn."""
    real = _Recorder()
    t = CoalescingTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    t.write(bytearray(b"ok"))
    assert real.calls == []
    await asyncio.sleep(0)
    assert real.calls == [("writelines", b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")]
    t.writelines([b"5\r\n", b"hello\r\n"])  # a stream's next chunk: its own turn
    await asyncio.sleep(0)
    assert real.calls[-1] == ("writelines", b"5\r\nhello\r\n") and len(real.calls) == 2


async def test_close_sends_what_is_kept_first_and_a_closed_socket_gets_nothing() -> None:
    """close() flushes before closing; bytes kept when the socket closed are dropped."""
    real = _Recorder()
    t = CoalescingTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    t.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    t.close()
    assert real.calls == [("writelines", b"HTTP/1.1 400 Bad Request\r\n\r\n"), ("close", None)]
    t.write(b"HTTP/1.1 200 OK\r\n\r\n")
    await asyncio.sleep(0)
    assert real.calls[-1] == ("close", None)
    assert t.get_write_buffer_size() == 7 and t.is_closing()


@pytest.mark.usefixtures("holding_store")
async def test_what_a_store_holds_is_written_before_the_answer() -> None:
    """A booking held for before the answer leaves first, even when the answer's flush was
    scheduled before the booking was made (a stream's last chunk)."""
    calls: list[tuple[str, Any]] = []
    client, store = _Recorder(calls), _Recorder(calls)
    t = CoalescingTransport(client, asyncio.get_running_loop())  # type: ignore[arg-type]
    t.write(b"data: last\n\n")  # its flush is queued now
    before_answer.hold(store, lambda: store.write(b"BOOK"))
    await asyncio.sleep(0)
    assert calls == [("write", b"BOOK"), ("writelines", b"data: last\n\n")]


async def test_held_commands_of_a_turn_share_one_write() -> None:
    """Commands sent `held` leave together: at the end of the turn or at the next answer."""
    wire = _Wire()
    redis = _Recorder()
    wire.connection_made(redis)  # type: ignore[arg-type]
    sent = [wire.send(("EVALSHA", "x", 0, n), held=True) for n in range(3)]
    assert redis.calls == [] and wire._awaited == 0
    before_answer.flush()  # an answer is about to leave
    expected = b"".join(hiredis.pack_command(("EVALSHA", "x", 0, n)) for n in range(3))
    assert redis.calls == [("write", expected)]
    wire.data_received(b":1\r\n:1\r\n:1\r\n")
    assert [f.result() for f in sent] == [1, 1, 1]
    wire.send(("EVALSHA", "x", 0, 9), held=True)
    await asyncio.sleep(0)  # no answer this turn: the turn's end writes it
    assert redis.calls[-1] == ("write", hiredis.pack_command(("EVALSHA", "x", 0, 9)))
    wire.fail(ConnectionError("done"))


def test_a_flush_runs_only_its_own_threads_holds() -> None:
    """Each loop's thread flushes its own connections, never another loop's."""
    ran: list[str] = []
    owner = object()
    before_answer.hold(owner, lambda: ran.append("mine"))
    other = threading.Thread(target=before_answer.flush)
    other.start()
    other.join()
    assert ran == []
    before_answer.flush()
    assert ran == ["mine"]


def test_a_store_that_holds_bookings_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Redis budget's turn bookings make the server's answers wait for the turn's end."""
    monkeypatch.setattr(before_answer, "_holders", False)
    TurnBookings(lambda workspace, day, cost: None)
    assert before_answer.holders()

"""The real `engine serve` process against hostile clients: oversized and too many headers,
a trickled head or body, a silent connection. Each ends in a clear 431/408 (or a quiet
close when nothing was asked) and a closed connection, in bounded memory (issue 14)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from tests.server.test_process import ROOT, _free_port, _wait_ready

HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n"
BODY = orjson.dumps({"model": "default", "messages": [{"role": "user", "content": "hi"}]})
#: Bound on every wait here: a server without the limits never answers, and the test fails.
WAIT_S = 15.0


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int

    def rss_kb(self) -> int:
        """Resident memory of the server process, from /proc."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`python -m engine serve` on the shipped config, with 1 s head/body/idle timeouts
    (one process for the module: starting one costs seconds)."""
    tmp_path = tmp_path_factory.mktemp("limits")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.endswith("_BASE_URL")}
    env |= {
        "ENGINE_LEDGER": str(tmp_path / "ledger.sqlite3"),
        "ENGINE_HEADER_TIMEOUT": "1",
        "ENGINE_BODY_TIMEOUT": "1",
        "ENGINE_IDLE_TIMEOUT": "1",
    }
    argv = [sys.executable, "-m", "engine", "serve", "--config", str(ROOT), "--port", str(port)]
    with (tmp_path / "server.log").open("wb") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=out)
    try:
        asyncio.run(_wait_ready(f"http://127.0.0.1:{port}", proc))
        yield Server(proc, port)
    finally:
        proc.kill()
        proc.wait()


async def answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, object], bytes]:
    """Read until the server closes: (status, JSON error body, everything after the body)."""
    data = await asyncio.wait_for(reader.read(), WAIT_S)  # to EOF: the connection closed
    head, _, rest = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head else 0
    return status, (orjson.loads(rest) if rest else {}), head


async def test_a_64_mb_header_is_refused_with_431_in_bounded_memory(server: Server) -> None:
    """A client streaming one endless header gets 431 and a closed connection; the server's
    memory grows by far less than what was sent."""
    before = server.rss_kb()
    reader, writer = await server.connect()
    answered = asyncio.create_task(answer(reader))  # reads while we send, up to the EOF
    writer.write(HEAD + b"x-big: ")
    chunk = b"a" * (1024 * 1024)
    with contextlib.suppress(ConnectionError):  # the server may close before all is sent
        for _ in range(64):
            if answered.done():
                break
            writer.write(chunk)
            await asyncio.wait_for(writer.drain(), WAIT_S)
    status, body, _ = await answered
    writer.close()
    assert status == 431
    assert body["error"]["code"] == "headers_too_large"  # type: ignore[index]
    assert server.rss_kb() - before < 16 * 1024


@pytest.mark.parametrize(
    ("count", "named"),
    [
        (150, "more than 100 request headers"),  # a small head, too many fields
        (10_000, "exceed 65536 bytes"),  # the byte limit stops it before the head ends
    ],
)
async def test_too_many_headers_are_refused_with_431(
    server: Server, count: int, named: str
) -> None:
    """Small headers past the count limit: 431 naming the limit hit, then the connection
    closes."""
    reader, writer = await server.connect()
    headers = b"".join(b"x-h%d: v\r\n" % i for i in range(count))
    writer.write(HEAD + headers + b"content-length: %d\r\n\r\n" % len(BODY) + BODY)
    status, body, _ = await answer(reader)
    writer.close()
    assert status == 431
    assert body["error"]["code"] == "headers_too_large"  # type: ignore[index]
    assert named in body["error"]["message"]  # type: ignore[index]


async def test_a_trickled_head_is_answered_408_and_closed(server: Server) -> None:
    """Half a head, then silence: 408 once the head timeout passes, then EOF."""
    reader, writer = await server.connect()
    writer.write(HEAD)
    status, body, _ = await answer(reader)
    writer.close()
    assert status == 408
    assert "request headers not received" in body["error"]["message"]  # type: ignore[index]


async def test_a_trickled_body_is_answered_408_and_closed(server: Server) -> None:
    """A whole head announcing 500 bytes, then 10 of them: 408 and EOF."""
    reader, writer = await server.connect()
    writer.write(HEAD + b"content-length: 500\r\n\r\n" + BODY[:10])
    status, body, _ = await answer(reader)
    writer.close()
    assert status == 408
    assert "request body not received" in body["error"]["message"]  # type: ignore[index]


async def test_a_silent_connection_is_closed_without_an_answer(server: Server) -> None:
    """A connection that never sends a byte is closed (EOF, no bytes) after the timeout."""
    reader, writer = await server.connect()
    assert await asyncio.wait_for(reader.read(), WAIT_S) == b""
    writer.close()


async def test_ordinary_keep_alive_requests_are_unaffected(server: Server) -> None:
    """Two requests on one connection are both answered 200; the idle connection then
    closes after the idle timeout."""
    reader, writer = await server.connect()
    for _ in range(2):
        writer.write(HEAD + b"content-length: %d\r\n\r\n" % len(BODY) + BODY)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT_S)
        assert head.startswith(b"HTTP/1.1 200")
        length = next(
            int(line.split(b":")[1]) for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )  # fmt: skip
        await reader.readexactly(length)
    assert await asyncio.wait_for(reader.read(), WAIT_S) == b""
    writer.close()


async def test_a_head_trickled_after_a_keep_alive_answer_gets_its_own_408(
    server: Server,
) -> None:
    """After an answer the idle timeout runs; the next request's first bytes end it, and
    its half-sent head is then answered 408 by the head timeout (not closed as idle)."""
    reader, writer = await server.connect()
    writer.write(HEAD + b"content-length: %d\r\n\r\n" % len(BODY) + BODY)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT_S)
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )  # fmt: skip
    await reader.readexactly(length)
    writer.write(HEAD)
    status, body, _ = await answer(reader)
    writer.close()
    assert status == 408
    assert "request headers not received" in body["error"]["message"]  # type: ignore[index]

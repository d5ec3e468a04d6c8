"""The sibling workers of one `serve --workers N`, asked for their live figures on demand.

Why: each worker process counts its own requests, and the kernel hands a scrape of
/v1/stats or /metrics to any one of them, so without this a scrape shows one worker's share
and the next scrape another's. Writing the figures somewhere on every request would cost
every call; writing them now and then would make every scrape stale by that period. So the
figures stay in memory, and the worker that answers a scrape asks its siblings at that
moment: each listens on a Unix socket `<dir>/peers/<pid>.sock` in the directory the
supervisor created for this server (runner.serve: private to its user, removed at exit)
and answers one JSON snapshot per connection. A socket nobody listens on (a worker that
died) is removed; a sibling that does not answer within `ASK_TIMEOUT_S` is left out and
counted as such.
Prometheus counters and histograms do not need this: prometheus-client's multiprocess
mode keeps them in files in the same directory (server/metrics.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("engine.server")

#: How long the answering worker waits for each sibling's snapshot.
ASK_TIMEOUT_S = 2.0

Snapshot = Mapping[str, Any]


class Workers:
    """This worker's socket, and the question it asks the others."""

    def __init__(self, directory: Path, snapshot: Callable[[], Snapshot]) -> None:
        self.directory = directory / "peers"
        self._snapshot = snapshot
        self._path = self.directory / f"{os.getpid()}.sock"
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        """Listen for siblings' questions (from the app's lifespan start-up)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._path.unlink(missing_ok=True)  # a dead worker's socket under a reused pid
        self._server = await asyncio.start_unix_server(self._answer, path=str(self._path))

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(orjson.dumps(self._snapshot(), default=str))
            await writer.drain()
        except Exception:  # a sibling's scrape must never take this worker down
            log.exception("could not answer a sibling worker's question")
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def gather(self) -> tuple[list[Snapshot], int]:
        """Every live worker's snapshot, this one's first; and how many did not answer."""
        others = [p for p in self.directory.glob("*.sock") if p != self._path]
        answers = await asyncio.gather(*(self._ask(p) for p in others))
        found = [a for a in answers if a is not None]
        missing = sum(1 for p, a in zip(others, answers, strict=True) if a is None and p.exists())
        return [self._snapshot(), *found], missing

    async def _ask(self, path: Path) -> Snapshot | None:
        try:
            async with asyncio.timeout(ASK_TIMEOUT_S):
                reader, writer = await asyncio.open_unix_connection(str(path))
                try:
                    data = await reader.read()  # to EOF: the sibling closes after one answer
                finally:
                    writer.close()
        except (ConnectionRefusedError, FileNotFoundError):
            path.unlink(missing_ok=True)  # its worker is gone (and its figures with it)
            return None
        except (TimeoutError, OSError) as exc:
            log.warning("worker %s did not answer (%s)", path.stem, type(exc).__name__)
            return None
        try:
            answer: Snapshot = orjson.loads(data)
        except orjson.JSONDecodeError:
            log.warning("worker %s answered garbage", path.stem)
            return None
        return answer

    async def aclose(self) -> None:
        """Stop listening and remove the socket (from the app's lifespan shutdown)."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self._path.unlink(missing_ok=True)

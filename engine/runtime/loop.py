"""The private event-loop thread behind the sync API (`run`, `stream`, `batch`, `close`).

The sync forms run the async core on one long-lived loop on a daemon thread, so pooled
connections survive between sync calls (asyncio.run would close them each time).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import threading
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class LoopThread:
    """A private event loop on a daemon thread: the sync API runs the async core here, so
    pooled connections survive between sync calls (asyncio.run would close them).

    A program that never calls `close()` still gets its connections closed (and the
    ledger flushed) at exit, through `on_exit` run on this loop."""

    def __init__(self, on_exit: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._on_exit = on_exit

    def _start(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="engine-sync", daemon=True).start()
                self._loop = loop
                atexit.register(self._at_exit)
            return self._loop

    def _at_exit(self) -> None:
        loop = self._loop
        if loop is not None and loop.is_running():
            future = asyncio.run_coroutine_threadsafe(self._on_exit(), loop)
            with contextlib.suppress(Exception):
                future.result(timeout=5)
        self.stop()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        loop = self._start()
        if _running_loop() is loop:
            coro.close()
            raise RuntimeError(
                "a sync engine call from inside the engine's own loop would "
                "deadlock; use the async form (arun/astream/abatch)"
            )
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # Ctrl-C in the caller cancels the call (and its upstream request)
            raise

    def iterate(self, events: AsyncGenerator[T, None]) -> Iterator[T]:
        """A plain iterator over an async generator run on the loop, closed when left."""

        async def step() -> T:
            return await anext(events)

        try:
            while True:
                try:
                    item = self.call(step())
                except StopAsyncIteration:
                    return
                yield item
        finally:
            self.call(events.aclose())

    def stop(self) -> None:
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is not None:
            atexit.unregister(self._at_exit)
            loop.call_soon_threadsafe(loop.stop)

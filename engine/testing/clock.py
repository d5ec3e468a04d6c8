"""A clock for tests: time moves only when told to, and sleeping advances it instantly."""

from __future__ import annotations

import asyncio


class FakeClock:
    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._mono = 1000.0
        self._wall = start
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self._mono

    def time(self) -> float:
        return self._wall

    def advance(self, seconds: float) -> None:
        self._mono += seconds
        self._wall += seconds

    async def sleep(self, seconds: float) -> None:
        """Record the sleep, advance time, and yield to the loop once."""
        self.slept.append(seconds)
        self.advance(max(seconds, 0.0))
        await asyncio.sleep(0)

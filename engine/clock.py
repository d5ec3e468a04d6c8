"""Injected time: the runtime never calls time.* or asyncio.sleep directly.

Tests use `engine.testing.clock.FakeClock`, so nothing waits for real and every routing
decision that depends on time (breakers, rate windows, TTLs, budgets' days) is reproducible.
"""

from __future__ import annotations

import asyncio
import time as _time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never goes back; for durations and windows."""
        ...

    def time(self) -> float:
        """Wall-clock Unix seconds; for ledger rows and budget periods."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    # The C functions themselves rather than methods calling them: every engine call reads
    # the clock several times, and this saves a Python frame each time.
    monotonic = staticmethod(_time.monotonic)
    time = staticmethod(_time.time)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

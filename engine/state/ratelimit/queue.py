"""The FIFO queue of requests waiting for a provider's keys to have room.

No barging: while anyone waits, a newcomer queues behind them. Only the head of the queue
works (the limiter's loop: try, else nap); the others wait for their turn, which the head
passes on when it leaves. The head naps on the injected clock until the earliest moment a
key frees up, and is woken early by `notify()` when a settle, a release or new headers may
have made room, or when a new waiter's deadline should shorten its nap. A waiter whose
deadline passes while it is not the head is failed by the head (`expire`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from engine.clock import Clock
from engine.state.ratelimit.keys import KeyState
from engine.state.ratelimit.window import Amounts


@dataclass(slots=True)
class Waiter:
    """One queued acquire: what it wants, since when, and its turn (or its error)."""

    states: list[KeyState]
    need: Amounts
    start: float
    max_wait_s: float
    turn: asyncio.Future[None]

    @property
    def deadline(self) -> float:
        return self.start + self.max_wait_s


@dataclass(slots=True)
class WaitQueue:
    """One provider's waiters in arrival order, and the head's wake-up signals."""

    waiters: deque[Waiter] = field(default_factory=deque)
    watchers: list[asyncio.Future[None]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.waiters)

    def join(self, waiter: Waiter) -> None:
        """Queue at the back; the head re-plans its nap around this waiter's deadline."""
        self.waiters.append(waiter)
        self.pass_turn()
        self.notify()

    def leave(self, waiter: Waiter) -> None:
        """Leave the queue (served, failed or cancelled) and pass the turn on."""
        self.waiters.remove(waiter)
        self.pass_turn()

    def pass_turn(self) -> None:
        if self.waiters and not self.waiters[0].turn.done():
            self.waiters[0].turn.set_result(None)

    def notify(self) -> None:
        """Wake a napping head: room may have appeared."""
        for fut in self.watchers:
            if not fut.done():
                fut.set_result(None)
        self.watchers.clear()

    def expire(self, now: float, error: Callable[[Waiter], Exception]) -> None:
        """Fail every waiter behind the head whose deadline has passed."""
        for waiter in list(self.waiters)[1:]:
            if now >= waiter.deadline and not waiter.turn.done():
                waiter.turn.set_exception(error(waiter))

    def next_deadline(self) -> float:
        return min(w.deadline for w in self.waiters)

    async def nap(self, clock: Clock, seconds: float) -> None:
        """Sleep on the clock, but wake early on `notify()`."""
        changed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.watchers.append(changed)
        sleeper = asyncio.ensure_future(clock.sleep(seconds))
        try:
            await asyncio.wait({changed, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            changed.cancel()
            if changed in self.watchers:
                self.watchers.remove(changed)

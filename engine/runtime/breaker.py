"""Circuit breakers, one per provider and one per model, so a dead upstream costs nothing.

closed --(N failures within the sliding window)--> open --(cooldown)--> half-open
half-open lets exactly one probe through: its success closes the breaker (with an empty
window), its failure re-opens it for another cooldown. While open, `allow` says no and
admission (call/admission.py) records a `circuit_open` attempt without any network call.

The window counts failures, not consecutive failures: a success in between does not erase
earlier failures still inside the window, so an upstream failing every other call trips
the breaker just like one failing every call. Verdicts of calls that started before the
breaker opened and end while it is open are ignored (they say nothing new), so a straggler
can neither extend nor cut short a cooldown.

All transitions are synchronous (no awaits), so concurrent requests on one loop see a
consistent state and only one of them can win the half-open probe.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from engine.clock import Clock
from engine.plan.values import BreakerPlan

BreakerState = Literal["closed", "open", "half_open"]


@dataclass(slots=True)
class _Breaker:
    failures: deque[float] = field(default_factory=deque)
    state: BreakerState = "closed"
    opened_at: float = 0.0
    cooldown_s: float = 30.0
    window_s: float = 60.0
    probing: bool = False
    last_error: str | None = None

    def prune(self, now: float) -> None:
        """Forget failures that have slid out of the window."""
        failures, horizon = self.failures, now - self.window_s
        while failures and failures[0] < horizon:
            failures.popleft()


class BreakerBoard:
    """Every breaker of one engine, keyed by provider id or model id.

    A key has an entry only while it has failures in its window or is not closed, so the
    board of a healthy engine is empty and `all_closed` is the hot path's one check.
    """

    def __init__(self, clock: Clock, on_open: Callable[[str, float], None] | None = None) -> None:
        """`on_open(key, cooldown_s)` hears of every opening of ours (the shared breaker
        signal publishes it to the other replicas)."""
        self._clock = clock
        self._breakers: dict[str, _Breaker] = {}
        self._on_open = on_open

    @property
    def all_closed(self) -> bool:
        """True when no breaker has failures or is open: the hot path's one check."""
        return not self._breakers

    def allow(self, key: str) -> bool:
        """May a call go through now? Grants the single half-open probe to the first asker."""
        b = self._breakers.get(key)
        if b is None or b.state == "closed":
            return True
        if b.state == "open":
            if self._clock.monotonic() - b.opened_at < b.cooldown_s:
                return False
            b.state = "half_open"
            b.probing = False
        if b.probing:
            return False
        b.probing = True
        return True

    def success(self, key: str) -> None:
        """A half-open success closes the breaker; a closed one only forgets old failures.

        Failures still inside the window stay counted: the window measures how often the
        upstream fails, not how long ago it last answered.
        """
        b = self._breakers.get(key)
        if b is None or b.state == "open":
            return
        if b.state == "half_open":
            del self._breakers[key]
            return
        b.prune(self._clock.monotonic())
        if not b.failures:
            del self._breakers[key]

    def failure(self, key: str, plan: BreakerPlan, error: str | None = None) -> None:
        """Count one failure; open when the window holds `plan.failures` of them."""
        b = self._breakers.get(key)
        if b is None:
            b = self._breakers[key] = _Breaker()
        now = self._clock.monotonic()
        b.last_error = error
        if b.state == "half_open":
            self._open(key, b, now, plan.cooldown_s)
            return
        if b.state == "open":
            return  # a straggler that started before the breaker opened
        b.window_s = plan.window_s
        b.failures.append(now)
        b.prune(now)
        if len(b.failures) >= plan.failures:
            self._open(key, b, now, plan.cooldown_s)

    def remote_open(self, key: str, seconds_left: float) -> None:
        """Another replica's breaker for `key` opened: treat it as ours for the time left
        (an opening of our own that lasts longer is kept)."""
        b = self._breakers.get(key)
        if b is None:
            b = self._breakers[key] = _Breaker()
        now = self._clock.monotonic()
        if b.state == "open" and b.opened_at + b.cooldown_s >= now + seconds_left:
            return
        b.state, b.opened_at, b.cooldown_s, b.probing = "open", now, seconds_left, False
        b.failures.clear()
        b.last_error = "opened by another replica"

    def abandon(self, key: str) -> None:
        """A granted probe ended without a verdict (cancelled): let another probe through."""
        b = self._breakers.get(key)
        if b is not None and b.state == "half_open":
            b.probing = False

    def _open(self, key: str, b: _Breaker, now: float, cooldown_s: float) -> None:
        b.state = "open"
        b.opened_at = now
        b.cooldown_s = cooldown_s
        b.probing = False
        b.failures.clear()
        if self._on_open is not None:
            self._on_open(key, cooldown_s)

    def state(self, key: str) -> BreakerState:
        """The state as a caller would see it now (an elapsed cooldown reads as half-open)."""
        b = self._breakers.get(key)
        if b is None:
            return "closed"
        if b.state == "open" and self._clock.monotonic() - b.opened_at >= b.cooldown_s:
            return "half_open"
        return b.state

    def last_error(self, key: str) -> str | None:
        b = self._breakers.get(key)
        return None if b is None else b.last_error

    def snapshot(self) -> dict[str, BreakerState]:
        return {k: self.state(k) for k in self._breakers}

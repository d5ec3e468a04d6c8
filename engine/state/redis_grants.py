"""What a replica holds between its rate-limit scripts: room booked ahead, corrections owed.

Why: a Redis round trip and a script per call cost the server more CPU than anything else
a call does there (docs/state.md). Two things let most calls skip them, without letting
any replica send more than the window allows:

- A `Grant`: when a key has plenty of room, the booking script books several requests'
  worth at once (at most a quarter of what is left, so other replicas keep room; one
  request when room is short, which is the exact per-call booking). This replica then
  serves calls from it until it runs out or the Redis second it was booked in ends: a call
  served from it is counted in that second's slice, which leaves the window 60 s after the
  second's end, never before the call's own 60 s are up. What is left unused goes back.
- `Owed`: the corrections of closed leases (real usage minus the estimate, a release's
  request, an unused grant), summed per key and booked second, sent with this replica's
  next booking on the key or by themselves within CLOSE_DELAY_S. Until they land, the
  window shows a lease's estimate (and a grant's unused room) instead of the real usage.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from engine.clock import Clock
from engine.plan.values import KeyPlan

#: The most requests one booking may book ahead.
MAX_GRANT = 64

#: How long a correction waits for a booking of this replica on the same key to carry it
#: before it is sent on its own.
CLOSE_DELAY_S = 0.01


@dataclass(slots=True)
class Grant:
    """Room for `size` requests booked on `key` in Redis second `slot`, usable until `until`
    (this replica's monotonic clock, taken before the booking was sent, plus what was left
    of that second: so never after the second's end)."""

    key: KeyPlan
    slot: int
    until: float
    size: int
    requests: int  # what is still unused: requests, input and output tokens
    input_tokens: int
    output_tokens: int

    def take(self, need: tuple[int, int], now: float) -> bool:
        """Serve one call from the grant, if it is still open and has room for it."""
        fits = self.requests >= 1 and self.input_tokens >= need[0]
        if now >= self.until or not fits or self.output_tokens < need[1]:
            return False
        self.requests -= 1
        self.input_tokens -= need[0]
        self.output_tokens -= need[1]
        return True

    def next_size(self) -> int:
        """How many requests the next booking on this pool asks for: twice what this one
        served (up to MAX_GRANT), so the grant follows this replica's pace per second."""
        return min(MAX_GRANT, max(1, 2 * (self.size - self.requests)))


class Owed:
    """Corrections not yet in Redis: (provider, key id) -> booked second -> the sums of
    request, input and output deltas and how many leases they close (the in-flight count
    goes down by that)."""

    def __init__(self) -> None:
        self._owed: dict[tuple[str, str], dict[int, list[int]]] = {}

    def __bool__(self) -> bool:
        return bool(self._owed)

    def add(
        self, provider: str, key_id: str, slot: int, requests: int, inp: int, out: int, closes: int
    ) -> None:
        sums = self._owed.setdefault((provider, key_id), {}).setdefault(slot, [0, 0, 0, 0])
        sums[0] += requests
        sums[1] += inp
        sums[2] += out
        sums[3] += closes

    def carried(self, provider: str, pool: tuple[KeyPlan, ...]) -> list[int]:
        """A booking's numbers that settle what the pool's keys are owed (taken out of
        here): their count, then per second the key's index in the pool, the second, the
        sums and the closes."""
        numbers = [0]
        for index, key in enumerate(pool, 1):
            for slot, sums in self._owed.pop((provider, key.id), {}).items():
                numbers[0] += 1
                numbers += (index, slot, *sums)
        return numbers

    def drain(self) -> list[tuple[str, str, list[int]]]:
        """Everything owed, as (provider, key id, CLOSE's numbers before the time)."""
        owed, self._owed = self._owed, {}
        out = []
        for (provider, key_id), slots in owed.items():
            numbers = [len(slots)]
            for slot, sums in slots.items():
                numbers += (slot, *sums)
            out.append((provider, key_id, numbers))
        return out


#: A CLOSE to send: provider, key id, the script's numbers before the time.
Closing = tuple[str, str, list[int]]


class Ahead:
    """One replica's grants (one per provider) and owed corrections, and the timers that
    give them back: a grant when its second ends, the corrections CLOSE_DELAY_S after the
    first of them (through `send`, which runs the CLOSE scripts)."""

    def __init__(self, clock: Clock, send: Callable[[list[Closing]], None]) -> None:
        self.owed = Owed()
        self._clock = clock
        self._send = send
        self._grants: dict[str, Grant] = {}
        self._want: dict[str, int] = {}  # provider -> requests the next booking asks for
        # providers with a booking ahead on its way -> done when it is answered
        self._refills: dict[str, asyncio.Future[None]] = {}
        self._closing: asyncio.TimerHandle | None = None

    def take(self, provider: str, pool: Sequence[KeyPlan], need: tuple[int, int]) -> Grant | None:
        """The provider's grant, one call's room taken from it; a grant that cannot serve
        the call (its key left the pool of usable keys, its second ended, or it ran short)
        is given back."""
        grant = self._grants.get(provider)
        if grant is None:
            return None
        usable = any(key.id == grant.key.id for key in pool)
        if usable and grant.take(need, self._clock.monotonic()):
            return grant
        self.retire(provider)
        return None

    def want(self, provider: str) -> int:
        """Requests to book ahead: one while another booking ahead is on its way."""
        return 1 if provider in self._refills else self._want.get(provider, 2)

    def refilling(self, provider: str, on: bool) -> None:
        """A booking ahead for `provider` is sent (`on`) or answered (its grant kept)."""
        if on:
            self._refills[provider] = asyncio.get_running_loop().create_future()
        elif (refill := self._refills.pop(provider, None)) is not None:
            refill.set_result(None)

    def refill(self, provider: str) -> asyncio.Future[None] | None:
        """The booking ahead on its way for `provider`, if any: a call the grant cannot
        serve waits for it (one round trip, as its own booking would take) instead of
        running a script of its own."""
        return self._refills.get(provider)

    def keep(self, provider: str, grant: Grant) -> None:
        """Hold a new grant (giving back an older one) until its second ends."""
        self.retire(provider)
        self._grants[provider] = grant
        delay = max(grant.until - self._clock.monotonic(), 0.0)
        asyncio.get_running_loop().call_later(delay, self._expire, provider, grant)

    def _expire(self, provider: str, grant: Grant) -> None:
        if self._grants.get(provider) is grant:
            self.retire(provider)

    def retire(self, provider: str, key_id: str | None = None) -> None:
        """Give back what the provider's grant (on `key_id`, when given) left unused: a
        correction like a release's, for every request it did not serve."""
        grant = self._grants.get(provider)
        if grant is None or (key_id is not None and grant.key.id != key_id):
            return
        del self._grants[provider]
        self._want[provider] = grant.next_size()
        if grant.requests or grant.input_tokens or grant.output_tokens:
            self.owe(
                provider, grant.key.id, grant.slot,
                -grant.requests, -grant.input_tokens, -grant.output_tokens, grant.requests,
            )  # fmt: skip

    def owe(
        self, provider: str, key_id: str, slot: int, requests: int, inp: int, out: int, closes: int
    ) -> None:
        self.owed.add(provider, key_id, slot, requests, inp, out, closes)
        if self._closing is None:
            loop = asyncio.get_running_loop()
            self._closing = loop.call_later(CLOSE_DELAY_S, self.send_owed)

    def send_owed(self) -> None:
        """Send every pending correction now, one CLOSE per key."""
        if self._closing is not None:
            self._closing.cancel()
            self._closing = None
        if self.owed:
            self._send(self.owed.drain())

    def give_back(self) -> None:
        """Every grant's unused room and every pending correction, on their way now."""
        for provider in list(self._grants):
            self.retire(provider)
        self.send_owed()

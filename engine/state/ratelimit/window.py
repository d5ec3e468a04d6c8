"""The sliding window: what one key has used in the last 60 seconds, per dimension.

Usage is kept as counters in 0.1 s slices, so memory stays bounded at any request rate and
usage leaves the window at most one slice late (erring on the safe side). A request's
footprint (`Use`) remembers its slice, so a later correction (real usage after the
estimate, or a refund) changes exactly the slice it was booked in, and only while that
slice is still inside the window.

Dimensions are indexed in `DIMENSIONS` order everywhere (a 4-tuple of amounts, a 4-list
of totals); "tokens" is input + output (OpenAI's combined TPM).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

WINDOW_S = 60.0
#: Width of the window's time slices: usage leaves the window at most this late.
RESOLUTION_S = 0.1
#: The four dimensions a key is limited on, in the order every 4-tuple here uses.
DIMENSIONS: tuple[str, ...] = ("requests", "input_tokens", "output_tokens", "tokens")

Amounts = tuple[int, int, int, int]


def amounts(requests: int, input_tokens: int, output_tokens: int) -> Amounts:
    """One request's (or one correction's) amounts in DIMENSIONS order."""
    return (requests, input_tokens, output_tokens, input_tokens + output_tokens)


@dataclass(slots=True)
class Slice:
    """Usage of one key in one RESOLUTION_S slice of time."""

    end: float  # the slice's end; it leaves the window at end + WINDOW_S
    requests: int = 0
    input: int = 0
    output: int = 0
    live: bool = True  # still inside the window

    def footprint(self, dim: int) -> int:
        """This slice's usage in dimension `dim` (an index into DIMENSIONS)."""
        return amounts(self.requests, self.input, self.output)[dim]


@dataclass(slots=True)
class Use:
    """One lease's booked footprint and the slice holding it."""

    slice: Slice
    requests: int
    input: int
    output: int
    open: bool = True  # not yet settled or released


@dataclass(slots=True)
class Window:
    """One key's slices in time order and their totals per dimension."""

    slices: deque[Slice] = field(default_factory=deque)
    used: list[int] = field(default_factory=lambda: [0, 0, 0, 0])  # DIMENSIONS order

    def evict(self, now: float) -> None:
        """Drop the slices that have left the window."""
        slices = self.slices
        while slices and slices[0].end + WINDOW_S <= now:
            old = slices.popleft()
            old.live = False
            self._count(amounts(-old.requests, -old.input, -old.output))

    def take(self, now: float, need: Amounts) -> Use:
        """Book one request (`need`: its amounts, requests first) in the current slice."""
        current = self._slice(now)
        current.requests += need[0]
        current.input += need[1]
        current.output += need[2]
        self._count(need)
        return Use(current, need[0], need[1], need[2])

    def correct(self, use: Use, requests: int, input_tokens: int, output_tokens: int) -> Amounts:
        """Replace a footprint by what really happened (requests=0: never sent); returns
        the change, which the caller also owes the provider's remaining figures."""
        delta = amounts(
            requests - use.requests, input_tokens - use.input, output_tokens - use.output
        )
        booked = use.slice
        if booked.live:
            booked.requests += delta[0]
            booked.input += delta[1]
            booked.output += delta[2]
            self._count(delta)
        use.requests, use.input, use.output = requests, input_tokens, output_tokens
        return delta

    def frees_at(self, dim: int, allowed: int) -> float:
        """When enough old slices leave for `used[dim] <= allowed` (0.0: already)."""
        used = self.used[dim]
        if used <= allowed:
            return 0.0
        for old in self.slices:
            used -= old.footprint(dim)
            if used <= allowed:
                return old.end + WINDOW_S
        return 0.0

    def _count(self, delta: Amounts) -> None:
        used = self.used
        used[0] += delta[0]
        used[1] += delta[1]
        used[2] += delta[2]
        used[3] += delta[3]

    def _slice(self, now: float) -> Slice:
        slices = self.slices
        if slices and now < slices[-1].end:
            return slices[-1]
        end = (math.floor(now / RESOLUTION_S) + 1) * RESOLUTION_S
        fresh = Slice(end if end > now else end + RESOLUTION_S)
        slices.append(fresh)
        return fresh

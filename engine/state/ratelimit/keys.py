"""Key choice across a provider's pool: which key has room for a request, and when one will.

A key's state is its sliding window (window.py) and its limits (learned.py). A request
fits a key when, in every watched dimension, the window's usage plus the request stays
within the limit and within the provider's remaining figure, and the key is not blocked.
A request larger than a whole limit counts as the whole limit, so it waits for an empty
window instead of forever.

Among keys that fit, the lease goes to the one with the most headroom left after this
request (the tightest dimension's share of its limit); ties go to the fewest in flight,
then the fewest requests in the window, then pool order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.plan.values import KeyPlan
from engine.state.ratelimit.learned import Limits
from engine.state.ratelimit.window import DIMENSIONS, Amounts, Use, Window


@dataclass(slots=True)
class KeyState:
    """One key of a pool: its window, its limits, and its requests in flight."""

    key: KeyPlan
    limits: Limits
    window: Window = field(default_factory=Window)
    in_flight: int = 0

    @classmethod
    def of(cls, key: KeyPlan, share: float) -> KeyState:
        return cls(key, Limits(key, share))

    def rebind(self, key: KeyPlan) -> None:
        self.key = key
        self.limits.rebind(key)

    def take(self, now: float, need: Amounts) -> Use:
        """Book one request: in the window, against remaining figures, as in flight."""
        use = self.window.take(now, need)
        if self.limits.informed:
            self.limits.spend(need)
            if self.limits.asked_until:
                self.limits.probe(now)
        self.in_flight += 1
        return use

    def close(self, use: Use, requests: int, input_tokens: int, output_tokens: int) -> None:
        """The request is over: book what it really used (requests=0: never sent)."""
        self.in_flight -= 1
        delta = self.window.correct(use, requests, input_tokens, output_tokens)
        if self.limits.informed:
            self.limits.spend(delta)


def headroom(state: KeyState, now: float, need: Amounts) -> float | None:
    """The tightest limit's share left after this request; None when it does not fit."""
    limits = state.limits
    if limits.unlimited:
        return 1.0
    if now < limits.blocked_until:
        return None
    used = state.window.used
    room = 1.0
    # Written with conditional expressions rather than min(): this runs for every attempt,
    # and the builtins' calls cost about 1 us a call here (bench/state.py).
    for dim, limit, figure in limits.watched:
        hint = figure.remaining if now < figure.reset_at else None  # figure.current(now)
        if limit is None:
            if hint is not None and need[dim] > hint:
                return None
            continue
        wanted = need[dim] if need[dim] < limit else limit
        left = limit - used[dim] - wanted
        if hint is not None and hint - wanted < left:
            left = hint - wanted
        if left < 0:
            return None
        share = left / limit if limit else 0.0
        if share < room:
            room = share
    return room


def choose(states: Sequence[KeyState], now: float, need: Amounts) -> KeyState | None:
    """The key with most headroom for this request (see the module docstring), or None."""
    best: KeyState | None = None
    best_rank: tuple[float, int, int] | None = None
    for state in states:
        state.window.evict(now)
        room = headroom(state, now, need)
        if room is None:
            continue
        rank = (room, -state.in_flight, -state.window.used[0])
        if best_rank is None or rank > best_rank:
            best, best_rank = state, rank
    return best


def ready_at(state: KeyState, now: float, need: Amounts) -> float:
    """The earliest time this key could take the request if nothing else happened."""
    limits = state.limits
    ready = max(now, limits.blocked_until)
    for dim in range(len(DIMENSIONS)):
        limit = limits.effective[dim]
        wanted = need[dim] if limit is None else min(need[dim], limit)
        hint = limits.hints[dim].current(now)
        if hint is not None and wanted > hint:
            ready = max(ready, limits.hints[dim].reset_at)
        if limit is not None:
            ready = max(ready, state.window.frees_at(dim, limit - wanted))
    return ready


def key_status(state: KeyState, now: float) -> dict[str, Any]:
    """Limit, remaining and used per dimension, in flight and blocked time (no secret)."""
    limits, used = state.limits, state.window.used
    out: dict[str, Any] = {}
    for dim, name in enumerate(DIMENSIONS):
        limit = limits.effective[dim]
        remaining = None if limit is None else max(0, limit - used[dim])
        hint = limits.hints[dim].current(now)
        if hint is not None:
            remaining = hint if remaining is None else min(remaining, hint)
        out[name] = {"limit": limit, "remaining": remaining, "used": used[dim]}
    out["in_flight"] = state.in_flight
    out["blocked_for_s"] = max(0.0, limits.blocked_until - now)
    return out

"""The tables and transactions behind `SQLiteRateLimiter`: one key pool's state in SQL.

Two tables, one row per (provider, key id) in the second:

    rl_use   usage booked per 0.1 s slice: (provider, key_id, slot) -> requests, input,
             output tokens; `slot * RESOLUTION_S` is the slice's end, exactly the slices
             of the in-process window (engine/state/ratelimit/window.py), so usage leaves
             the window at the same moment, at most one slice late
    rl_key   what headers taught about the key (its limits, the provider's remaining
             figures and their resets, a Retry-After block and its probe time, as JSON;
             NULL until a header said something), and its requests in flight

Each function here is one transaction body, run by the limiter inside `BEGIN IMMEDIATE`
(so one process at a time checks and books). The decisions themselves are the in-process
limiter's own code: the rows are loaded into its `KeyState` objects (window totals and
learned `Limits`), `choose` picks the key, `ready_at` says when one could next, and
`key_status` reports; only the bookkeeping is SQL. Times are wall-clock Unix seconds,
which every process of the host shares.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine.messages import RateLimitInfo
from engine.plan.values import KeyPlan
from engine.state.ratelimit.keys import KeyState, choose, key_status, ready_at
from engine.state.ratelimit.learned import Limits
from engine.state.ratelimit.window import RESOLUTION_S, WINDOW_S, Amounts, Slice, Window

_EPSILON_S = 1e-6
#: Learned figures unused for this long are forgotten (Redis lets them expire alike).
LEARNED_TTL_S = 86400.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS rl_use (
    provider TEXT NOT NULL, key_id TEXT NOT NULL, slot INTEGER NOT NULL,
    requests INTEGER NOT NULL, input INTEGER NOT NULL, output INTEGER NOT NULL,
    PRIMARY KEY (provider, key_id, slot)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rl_key (
    provider TEXT NOT NULL, key_id TEXT NOT NULL, learned TEXT,
    in_flight INTEGER NOT NULL DEFAULT 0, updated REAL NOT NULL,
    PRIMARY KEY (provider, key_id)
) WITHOUT ROWID;
"""


@dataclass(frozen=True, slots=True)
class Booked:
    """Where a lease's usage went: the key and the slice it was booked in."""

    key_id: str
    slot: int


def slot_of(now: float) -> int:
    """The slice `now` books into: its end is the next multiple of RESOLUTION_S after now."""
    slot = math.floor(now / RESOLUTION_S) + 1
    return slot + 1 if slot * RESOLUTION_S <= now else slot


def live(slot: int, now: float) -> bool:
    """Whether a slice is still inside the window (the in-process eviction rule). Wall-clock
    seconds near 1.7e9 carry float error around 1e-7, so a slice whose end is due this very
    microsecond counts as gone rather than lingering a whole extra slice."""
    return slot * RESOLUTION_S + WINDOW_S > now + _EPSILON_S


def cutoff(now: float) -> int:
    """The newest slot that has left the window."""
    cut = math.floor((now - WINDOW_S) / RESOLUTION_S)
    while live(cut, now):
        cut -= 1
    while not live(cut + 1, now):
        cut += 1
    return cut


# -- learned limits as JSON -----------------------------------------------------------------


def dump_learned(limits: Limits) -> str:
    hints = [[h.limit, h.remaining, h.reset_at] for h in limits.hints]
    blocked, asked = limits.blocked_until, limits.asked_until
    return json.dumps({"hints": hints, "blocked": blocked, "asked": asked})


def load_learned(limits: Limits, text: str | None) -> None:
    """Put stored figures into a fresh `Limits` (which then recomputes what it derives)."""
    if not text:
        return
    data = json.loads(text)
    for hint, (limit, remaining, reset_at) in zip(limits.hints, data["hints"], strict=True):
        hint.limit, hint.remaining, hint.reset_at = limit, remaining, reset_at
    limits.informed = True
    limits.blocked_until = float(data["blocked"])
    limits.asked_until = float(data["asked"])
    limits.rebind(limits.key)


# -- reading the pool -------------------------------------------------------------------------


def _key_row(conn: sqlite3.Connection, provider: str, key_id: str, now: float) -> tuple[Any, int]:
    row = conn.execute(
        "SELECT learned, in_flight, updated FROM rl_key WHERE provider = ? AND key_id = ?",
        (provider, key_id),
    ).fetchone()
    if row is None:
        return None, 0
    learned = row[0] if now - float(row[2]) < LEARNED_TTL_S else None
    return learned, int(row[1])


def load_states(
    conn: sqlite3.Connection, provider: str, keys: Sequence[KeyPlan], now: float, slices: bool
) -> list[KeyState]:
    """The pool as the in-process limiter's `KeyState`s: window totals (and, with `slices`,
    each live slice, which `ready_at` walks), learned limits and requests in flight."""
    cut = cutoff(now)
    states = []
    for key in keys:
        state = KeyState.of(key, 1.0)
        learned, state.in_flight = _key_row(conn, provider, key.id, now)
        load_learned(state.limits, learned)
        if slices:
            state.window = _window(conn, provider, key.id, cut)
        else:
            row = conn.execute(
                "SELECT COALESCE(SUM(requests), 0), COALESCE(SUM(input), 0), "
                "COALESCE(SUM(output), 0) FROM rl_use "
                "WHERE provider = ? AND key_id = ? AND slot > ?",
                (provider, key.id, cut),
            ).fetchone()
            requests, inp, out = (int(v) for v in row)
            state.window = Window(used=[requests, inp, out, inp + out])
        states.append(state)
    return states


def _window(conn: sqlite3.Connection, provider: str, key_id: str, cut: int) -> Window:
    window = Window()
    for slot, requests, inp, out in conn.execute(
        "SELECT slot, requests, input, output FROM rl_use "
        "WHERE provider = ? AND key_id = ? AND slot > ? ORDER BY slot",
        (provider, key_id, cut),
    ):
        window.slices.append(Slice(slot * RESOLUTION_S, requests, inp, out))
        window.used[0] += requests
        window.used[1] += inp
        window.used[2] += out
        window.used[3] += inp + out
    return window


# -- transactions -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one check-and-book found: a booking, or when room may appear and how many
    requests of the pool are in flight (any process's) that could bring it sooner."""

    booked: Booked | None
    key: KeyPlan | None = None
    ready: float = 0.0
    in_flight: int = 0


def book(
    conn: sqlite3.Connection,
    provider: str,
    keys: Sequence[KeyPlan],
    need: Amounts,
    now: float,
    prune: bool = True,
) -> Outcome:
    """Check every key of the pool and book the request on the best one, in one go.
    `prune`: also delete the slices that have left the window (they no longer count
    either way; the limiter does it once per slice, not per call)."""
    if prune:
        conn.execute("DELETE FROM rl_use WHERE provider = ? AND slot <= ?", (provider, cutoff(now)))
    states = load_states(conn, provider, keys, now, slices=False)
    best = choose(states, now, need)
    if best is None:
        states = load_states(conn, provider, keys, now, slices=True)
        ready = min(ready_at(s, now, need) for s in states)
        return Outcome(None, ready=ready, in_flight=sum(s.in_flight for s in states))
    slot = slot_of(now)
    conn.execute(
        "INSERT INTO rl_use (provider, key_id, slot, requests, input, output) "
        "VALUES (?, ?, ?, 1, ?, ?) ON CONFLICT (provider, key_id, slot) DO UPDATE SET "
        "requests = requests + 1, input = input + excluded.input, "
        "output = output + excluded.output",
        (provider, best.key.id, slot, need[1], need[2]),
    )
    limits = best.limits
    if limits.informed:
        limits.spend(need)
        if limits.asked_until:
            limits.probe(now)
    _save(conn, provider, best.key.id, limits if limits.informed else None, 1, now)
    return Outcome(Booked(best.key.id, slot), best.key)


def close(
    conn: sqlite3.Connection, provider: str, booked: Booked, delta: Amounts, now: float
) -> None:
    """A lease is over: correct its slice by `delta` (real minus booked) while the slice is
    in the window, count it against the remaining figures, and take it out of flight."""
    if live(booked.slot, now) and any(delta[:3]):
        conn.execute(
            "UPDATE rl_use SET requests = requests + ?, input = input + ?, output = output + ? "
            "WHERE provider = ? AND key_id = ? AND slot = ?",
            (delta[0], delta[1], delta[2], provider, booked.key_id, booked.slot),
        )
    learned, _ = _key_row(conn, provider, booked.key_id, now)
    limits = Limits(KeyPlan(id=booked.key_id, secret=None))
    load_learned(limits, learned)
    if limits.informed:
        limits.spend(delta)
    _save(conn, provider, booked.key_id, limits if limits.informed else None, -1, now)


def observe(
    conn: sqlite3.Connection, provider: str, key_id: str, info: RateLimitInfo, now: float
) -> None:
    """Learn from one answer's headers (the in-process rules, `Limits.observe`)."""
    learned, _ = _key_row(conn, provider, key_id, now)
    limits = Limits(KeyPlan(id=key_id, secret=None))
    load_learned(limits, learned)
    limits.observe(info, now)
    _save(conn, provider, key_id, limits, 0, now)


def status(
    conn: sqlite3.Connection, provider: str, keys: Sequence[KeyPlan], now: float
) -> dict[str, Any]:
    """Per key id (the given pool and any key headers were learned for): `key_status`."""
    known = {k.id: k for k in keys}
    for (key_id,) in conn.execute("SELECT key_id FROM rl_key WHERE provider = ?", (provider,)):
        known.setdefault(key_id, KeyPlan(id=key_id, secret=None))
    states = load_states(conn, provider, list(known.values()), now, slices=False)
    return {s.key.id: key_status(s, now) for s in states}


def _save(
    conn: sqlite3.Connection,
    provider: str,
    key_id: str,
    limits: Limits | None,
    flight: int,
    now: float,
) -> None:
    """Write the key's learned figures (None: leave them) and move its in-flight count."""
    learned = dump_learned(limits) if limits is not None else None
    conn.execute(
        "INSERT INTO rl_key (provider, key_id, learned, in_flight, updated) "
        "VALUES (?, ?, ?, MAX(?, 0), ?) ON CONFLICT (provider, key_id) DO UPDATE SET "
        "learned = COALESCE(excluded.learned, learned), "
        "in_flight = MAX(in_flight + ?, 0), updated = excluded.updated",
        (provider, key_id, learned, flight, now, flight),
    )

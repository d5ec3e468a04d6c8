"""Workspace budgets in Redis, shared by every replica that points at the same server.

Why: N replicas each with their own store can let a workspace spend N times its limit.
Here each check-and-book is one Lua script, which Redis runs atomically, so reservations
from any number of processes and hosts see each other. What the scripts guarantee:

- the day and month are the Redis server's (its `TIME`), so replicas whose clocks differ
  still agree on which day a dollar belongs to;
- money is integer nano-dollars (Redis integers), reservations rounded up, limits down
  (the shared `money` helpers), so no float drift lets a call through;
- a reservation holds its worst case until settled or released, and at most `hold_s`
  (the call's total timeout plus a margin): a replica killed mid-call gives its hold back
  on its own when the hold expires;
- settle and release are idempotent (a second one books nothing): a token is closed while
  its hold is open, or for two days after a later script found its hold expired (a
  stalled process's late settle still books its cost once), and nothing is kept per
  closed token;
- every key of one workspace carries the same hash tag, so each script touches one slot
  and the store works on Redis Cluster.

When Redis cannot be reached, `reserve` fails closed with a RoutingError naming the store
(the server answers 503, nothing is spent); a failed settle or release is logged and the
answer kept (its hold expires by itself). Settle and release do not wait for Redis's reply
on the pipelined connection (see `_finish`). The scripts, and what each costs the server,
are in engine/state/redis_budget_lua.py.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Mapping
from typing import Any, NoReturn

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from engine.state import before_answer
from engine.state.money import (
    NANO,
    check_amount,
    check_limit,
    check_totals,
    month_start,
    nanos,
    nanos_up,
    utc_day,
    utc_month,
)
from engine.state.protocols import Reservation, SpendSource
from engine.state.redis_bookings import TurnBookings
from engine.state.redis_budget_lua import BOOK, CLOSE, GRANT, RESERVE, SPENT
from engine.state.redis_common import KeyNames, connect, packed, tag, unreachable
from engine.state.redis_scripts import Arg, Scripts, scripts_for

log = logging.getLogger(__name__)

#: Closes written but not yet answered, of every store of this process. `spent` waits for
#: those on its loop, so a read through any store sees every settle this process made before
#: it, even through another connection (stores built apart, as tests' replicas are; Redis
#: orders one connection's commands, not several connections').
_IN_FLIGHT: set[asyncio.Future[Any]] = set()

#: How long an unsettled reservation counts when the caller gives no call timeout.
HOLD_S = 600.0
#: A workspace's spend hash outlives its month by this much after its last write.
SPEND_TTL_MS = 40 * 86_400_000

#: A hold's token carries its amount (token = sequence number * _SPAN + nanos), so a close
#: names the open set's member 'sequence:nanos' without a lookup on the server. (Lua writes
#: the sequence number exactly below 10^14 holds per workspace.)
_SPAN = 1 << 64
#: A refusal's period field -> the limit's name.
_LIMITS = {"d": "daily", "m": "monthly", "a": "total"}


@functools.lru_cache(maxsize=4)
def _calendar(day: int) -> tuple[int, str, str]:
    """The scripts' calendar arguments for a UTC day number: the day, its names."""
    name = utc_day(day * 86400.0)
    return day, f"d:{name}", f"m:{name[:7]}"


def held_nanos(reservation: Reservation) -> int:
    """What a reservation of this store holds, exactly, in nano-dollars (its token says)."""
    return reservation.token % _SPAN


def _today() -> tuple[int, str, str]:
    """This process's guess of the server's day (the scripts check it against TIME)."""
    return _calendar(int(time.time() // 86400))


class RedisBudgetStore:
    """`BudgetStore` on Redis: one atomic script per reservation, settle and release."""

    def __init__(
        self,
        url: str,
        *,
        hold_s: float = HOLD_S,
        prefix: str = "engine",
        client: Any = None,
        scripts: Scripts | None = None,
        scope: str = "workspace",
        totals: bool = False,
    ) -> None:
        self._redis: aioredis.Redis = client if client is not None else connect(url)
        self._name = "the Redis budget store"
        self._scope = scope  # what a refusal calls the name ("workspace", "API key")
        self._totals = totals  # keep an all-time total per name, and never expire its spend
        self._spend_ttl_ms = 0 if totals else SPEND_TTL_MS
        self._hold_ms = max(1, int(hold_s * 1000))
        self._prefix = prefix
        self._scripts = scripts or scripts_for(url, self._redis, given=client is not None)
        self._reserve = self._scripts.register(RESERVE)
        self._close = self._scripts.register(CLOSE)
        self._spent = self._scripts.register(SPENT)
        self._grant = self._scripts.register(GRANT)
        self._book = self._scripts.register(BOOK)
        self._bookings = TurnBookings(self._send_booking)  # a server turn's, merged
        self._keys = KeyNames(self._key_names)  # a workspace's key names

    def __repr__(self) -> str:  # never the URL: it may carry a password
        return f"RedisBudgetStore(prefix={self._prefix!r})"

    @property
    def prefix(self) -> str:
        """The stores sharing this prefix share their budgets."""
        return self._prefix

    def _key_names(self, workspace: str) -> tuple[str, ...]:
        base = f"{self._prefix}:budget:{tag(workspace)}"
        # "held", "open" and "lapsed" replaced "holds", "exp" and "done" (docs/state.md)
        return tuple(f"{base}:{part}" for part in ("spend", "held", "open", "lapsed"))

    async def restore(self, source: SpendSource) -> None:
        """Seed this month's settled spend from the ledger, once per month for all replicas
        (the first replica to claim the month's marker does it)."""
        now = await self._server_time()
        claim = f"{self._prefix}:budget:restored:{utc_month(now)}"
        if not await self._redis.set(claim, "1", nx=True, px=SPEND_TTL_MS):
            return
        for workspace, day, usd in await source.spend_since(month_start(now)):
            keys = self._keys(workspace)
            pipe = self._redis.pipeline(transaction=False)
            pipe.hincrby(keys[0], f"d:{day}", nanos(usd))
            pipe.hincrby(keys[0], f"m:{day[:7]}", nanos(usd))
            if self._totals:
                pipe.hincrby(keys[0], "a:all", nanos(usd))
            else:
                pipe.pexpire(keys[0], SPEND_TTL_MS)
            await pipe.execute()

    async def _server_time(self) -> float:
        secs, micros = await self._redis.time()
        return float(secs) + micros / 1e6

    def reserve(
        self,
        workspace: str,
        amount_usd: float,
        daily_usd: float | None,
        monthly_usd: float | None,
        total_usd: float | None = None,
    ) -> Awaitable[Reservation]:
        """Hold the worst case against day, month (and total) together, or raise
        BudgetExceededError. The script is sent before this returns (on the pipelined
        connection: written at once when it is the first command of the loop's turn), so
        Redis works on it while the caller takes its lease; the answer is read when
        awaited."""
        check_amount(amount_usd)
        check_totals(self._totals, total_usd)
        amount = nanos_up(amount_usd)
        today, day, month = _today()
        limits = (-1 if v is None else int(v * NANO) for v in (daily_usd, monthly_usd, total_usd))
        args: list[Arg] = [day, month, amount, packed(today, self._hold_ms, *limits)]
        try:
            reply = self._reserve(keys=self._keys(workspace), args=args)
        except (RedisError, OSError) as exc:
            raise unreachable(self._name, exc) from None
        return self._held(reply, workspace, amount, (daily_usd, monthly_usd, total_usd))

    async def _held(
        self,
        reply: Awaitable[Any],
        workspace: str,
        amount: int,
        limits: tuple[float | None, float | None, float | None],
    ) -> Reservation:
        """A hold's reply: RESERVE's sequence number, GRANT's {sequence number, nanos
        held}, or a refusal {0, period field, spent, held} (raised as BudgetExceededError)."""
        try:
            answer = await reply
        except (RedisError, OSError) as exc:
            raise unreachable(self._name, exc) from None
        if not isinstance(answer, list):
            answer = [answer, amount]
        if len(answer) == 2:
            seq, held = int(answer[0]), int(answer[1])
            return Reservation(workspace, held / NANO, seq * _SPAN + held)
        self._refused(answer, workspace, amount, limits)

    def _refused(
        self,
        answer: list[Any],
        workspace: str,
        amount: int,
        limits: tuple[float | None, float | None, float | None],
    ) -> NoReturn:
        """A script's refusal {0, period field, spent, held} as BudgetExceededError."""
        _, field, spent, held = answer
        period = field.decode()
        name = _LIMITS[period[0]]
        limit = limits["dma".index(period[0])]
        check_limit(
            workspace, period[2:], name, float(limit or 0.0), int(spent), int(held), amount,
            scope=self._scope,
        )  # fmt: skip
        raise AssertionError(f"the budget script refused {name} on sums that fit")

    def grant(
        self,
        workspace: str,
        amount: int,
        limits: tuple[float | None, float | None, float | None],
        *,
        want: int,
        ahead: int,
        longer_ms: int,
    ) -> Awaitable[Reservation]:
        """Hold `want` nanos (room booked ahead: redis_budget_ahead.py) when every limited
        period has `ahead` times `amount` left, capped at a quarter of the least room left;
        else exactly `amount`, or raise BudgetExceededError. The hold lasts `longer_ms`
        beyond a call's; the Reservation says how much was held. Sent before this returns."""
        check_totals(self._totals, limits[2])
        today, day, month = _today()
        caps = (-1 if v is None else int(v * NANO) for v in limits)
        numbers = packed(today, self._hold_ms + longer_ms, *caps, want, ahead)
        try:
            reply = self._grant(keys=self._keys(workspace), args=[day, month, amount, numbers])
        except (RedisError, OSError) as exc:
            raise unreachable(self._name, exc) from None
        return self._held(reply, workspace, amount, limits)

    def book(self, workspace: str, cost_usd: float) -> None:
        """Book a cost on the server's day and month, and nothing else: the cost of a call
        held in room booked ahead (that room stays held until given back with `release`).
        Not awaited; a failure is logged. Written before this process's next answer leaves:
        at once, or, under a server armed for it, merged with the turn's other bookings of
        the workspace into one (engine/state/redis_bookings.py)."""
        cost = max(0, nanos(cost_usd))
        if not cost:
            return
        today = _today()[0]
        if before_answer.armed():
            self._bookings.add(workspace, today, cost)
        else:
            self._send_booking(workspace, today, cost, held=False)

    def _send_booking(self, workspace: str, today: int, cost: int, held: bool = True) -> None:
        _, day, month = _calendar(today)
        ttl_ms = -1 if self._totals else SPEND_TTL_MS
        keys = self._keys(workspace)[:1]
        args: list[Arg] = [day, month, cost, packed(today, cost, ttl_ms)]
        sent = (self._book.held if held else self._book.written)(keys, args)
        if sent is None:
            sent = asyncio.ensure_future(self._book(keys=keys, args=args))
        _IN_FLIGHT.add(sent)
        sent.add_done_callback(functools.partial(self._booked, workspace, cost))

    def _booked(self, workspace: str, cost: int, sent: asyncio.Future[Any]) -> None:
        _IN_FLIGHT.discard(sent)
        exc = None if sent.cancelled() else sent.exception()
        if exc is not None:
            log.error(
                "%s: could not book %d nano-dollars spent by %r (%s)",
                self._name, cost, workspace, type(exc).__name__,
            )  # fmt: skip

    async def settle(self, reservation: Reservation, actual_usd: float) -> None:
        """Replace the hold by the real cost (booked on the Redis server's day)."""
        await self._finish(reservation, max(0, nanos(actual_usd)))

    async def release(self, reservation: Reservation) -> None:
        """Drop the hold; nothing is booked."""
        await self._finish(reservation, 0)

    async def _finish(self, reservation: Reservation, cost: int) -> None:
        """Close the hold. On the pipelined connection the script is written before this
        returns and its reply is not awaited: Redis runs a connection's commands in order,
        so this process's next reserve or spent sees it, and the bytes are at the server
        before the call's answer leaves; until it lands another replica sees the hold (the
        worst case). A call saves a round trip at its end (docs/state.md)."""
        keys, args = self._close_args(reservation, cost)
        sent = self._close.written(keys, args)
        if sent is not None:
            _IN_FLIGHT.add(sent)
            sent.add_done_callback(functools.partial(self._closed, reservation))
            return
        try:
            await self._close(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            self._unclosed(reservation, exc)

    def give_back(self, reservation: Reservation) -> None:
        """`release` without an await: written before this returns on the pipelined
        connection (so what this process sends next runs after it), else sent as a task."""
        self._bookings.flush()  # the costs it covered are booked first
        keys, args = self._close_args(reservation, 0)
        sent = self._close.written(keys, args)
        if sent is None:
            sent = asyncio.ensure_future(self._close(keys=keys, args=args))
        _IN_FLIGHT.add(sent)
        sent.add_done_callback(functools.partial(self._closed, reservation))

    def _close_args(self, reservation: Reservation, cost: int) -> tuple[list[Arg], list[Arg]]:
        keys: list[Arg] = list(self._keys(reservation.workspace))
        seq, amount = divmod(reservation.token, _SPAN)
        today, day, month = _today()
        ttl_ms = -1 if self._totals else SPEND_TTL_MS
        member = f"{seq}:{amount}"
        return keys, [day, month, member, -amount, cost, packed(today, cost, ttl_ms)]

    def _closed(self, reservation: Reservation, sent: asyncio.Future[Any]) -> None:
        _IN_FLIGHT.discard(sent)
        exc = None if sent.cancelled() else sent.exception()
        if exc is not None:
            self._unclosed(reservation, exc)

    def _unclosed(self, reservation: Reservation, exc: BaseException) -> None:
        log.error(
            "%s: could not close reservation %s of %r (%s); its hold expires by itself",
            self._name, reservation.token, reservation.workspace, type(exc).__name__,
        )  # fmt: skip

    async def spent(self, workspace: str) -> Mapping[str, float]:
        """{"day": usd, "month": usd} including open holds, on the server's calendar."""
        await _landed()
        keys = self._keys(workspace)
        try:
            today, day_name, month_name = _today()
            args: list[Arg] = [day_name, month_name, today]
            day, month, total = await self._spent(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise unreachable(self._name, exc) from None
        out = {"day": int(day) / NANO, "month": int(month) / NANO}
        if self._totals:
            out["total"] = int(total) / NANO
        return out

    async def aclose(self) -> None:
        """Wait for the closes still on their way, then give back the connections."""
        await _landed()
        await self._scripts.aclose()
        await self._redis.aclose()


async def _landed() -> None:
    """Return once the closes this process sent so far (on this loop) have their replies."""
    before_answer.flush()  # bookings this thread holds back (merged ones first)
    loop = asyncio.get_running_loop()
    sent = [f for f in _IN_FLIGHT if f.get_loop() is loop]
    if sent:
        await asyncio.wait(sent)

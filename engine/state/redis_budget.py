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
  its hold is open, or within two days of its hold's expiry (a stalled process's late
  settle still books its cost once), and nothing is kept per closed token;
- every key of one workspace carries the same hash tag, so each script touches one slot
  and the store works on Redis Cluster.

When Redis cannot be reached, `reserve` fails closed with a RoutingError naming the store
(the server answers 503, nothing is spent); a failed settle or release is logged and the
answer kept (its hold expires by itself). Settle and release do not wait for Redis's reply
on the pipelined connection (see `_finish`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

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
from engine.state.redis_common import KeyNames, connect, tag, unreachable
from engine.state.redis_scripts import Scripts, scripts_for

log = logging.getLogger(__name__)

#: Closes written but not yet answered, of every store of this process. `spent` waits for
#: those on its loop, so a read through any store sees every settle this process made before
#: it, even through another connection (stores built apart, as tests' replicas are; Redis
#: orders one connection's commands, not several connections').
_IN_FLIGHT: set[asyncio.Future[Any]] = set()

#: How long an unsettled reservation counts when the caller gives no call timeout.
HOLD_S = 600.0
#: How long an expired hold can still be settled (its cost booked once) or released.
LAPSED_MS = 2 * 86_400_000
#: A workspace's spend hash outlives its month by this much after its last write.
SPEND_TTL_MS = 40 * 86_400_000

# Measured with callgrind on redis-server 7.0 (instructions per script, docs/state.md): a
# redis.call costs 3,500-8,000, a KEYS/ARGV entry ~1,200, a Lua number turned into a string
# ~4,200, `tonumber` ~2,100 (it converts twice; arithmetic on the string, `s + 0`, once),
# a closure ~1,400. So the scripts are straight-line code that calls Redis little, converts
# little and takes few arguments.

# The server's day and month (its TIME: replicas whose clocks differ still agree), from
# `t = TIME`. The caller sends its guess (ARGV 1-3: the day's number since the epoch,
# 'd:YYYY-MM-DD', 'm:YYYY-MM'), kept when it is the server's day; only a wrong guess (a
# replica's clock off near midnight) has the names built here, by days_from_civil inverted
# (H. Hinnant's algorithm; Lua has no dates). Building them on every call cost ~14,000.
_DAY = """
local day, month = ARGV[2], ARGV[3]
if math.floor(t[1] / 86400) ~= ARGV[1] + 0 then
  local z = math.floor(t[1] / 86400) + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local dd = doy - math.floor((153 * mp + 2) / 5) + 1
  local mm = mp < 10 and mp + 3 or mp - 9
  local yy = yoe + era * 400 + (mm <= 2 and 1 or 0)
  day = string.format('d:%04d-%02d-%02d', yy, mm, dd)
  month = 'm:' .. string.sub(day, 3, 9)
end
"""

# `now` is the time in ms as a string (TIME's seconds and the first 3 digits of its
# microseconds): the sweep's bound, with no number->string conversion.
_CLOCK = (
    """
local t = redis.call('TIME')
local now = t[1] .. string.sub('00000' .. t[2], -6, -4)
"""
    + _DAY
)

# KEYS: spend, held, open, lapsed. An open hold is a member 'sequence:amount' of the open
# set, scored by its expiry; the held hash keeps `sum`, the sum of their amounts (changed in
# the same script as the set, so a reservation costs the same however many calls are in
# flight), and `seq`, the last sequence number. The member carries the amount, so a close is
# one ZREM and one HINCRBY (a hash of amounts took two calls more). A script cut short (Redis
# does not roll back) leaves the sum too high, never too low: it grows before the set does
# and shrinks after. Expired holds are dropped here; each one's member moves to the lapsed
# set for LAPSED_MS, so the call's settle, if it comes after all (a process that stalled past
# the hold), still books its cost once.
_SWEEP = """
local gone = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
if #gone > 0 then
  local freed, later = 0, {}
  for i, member in ipairs(gone) do
    freed = freed + string.match(member, ':(%d+)$')
    later[2 * i - 1], later[2 * i] = now + LAPSED_MS, member
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
  for i = 1, #later, 200 do
    redis.call('ZADD', KEYS[4], unpack(later, i, math.min(i + 199, #later)))
  end
  redis.call('PEXPIRE', KEYS[4], LAPSED_MS)
  if redis.call('ZCARD', KEYS[3]) == 0 then  -- none open: the sum is 0, whatever it drifted to
    redis.call('HSET', KEYS[2], 'sum', 0)
  else
    redis.call('HINCRBY', KEYS[2], 'sum', -freed)
  end
end
""".replace("LAPSED_MS", str(LAPSED_MS))

# KEYS: spend, held, open, lapsed. ARGV: (day), amount, hold ms, then per limit its period
# ('d' day, 'm' month, 'a' all time) and nanos. -> the hold's sequence number, or
# {0, the refused period's field, spent in it, held}. The sum is read by adding the amount
# (HINCRBY answers a number, where a read answered a string to convert) and given back on
# a refusal; only the periods with a limit are read (HMGET of all three cost ~4,000 more).
_RESERVE = (
    _CLOCK
    + _SWEEP
    + """
local held = redis.call('HINCRBY', KEYS[2], 'sum', ARGV[4])
for i = 6, #ARGV, 2 do
  local field = ARGV[i] == 'd' and day or ARGV[i] == 'm' and month or 'a:all'
  local spent = (redis.call('HGET', KEYS[1], field) or 0) + 0
  if spent + held > ARGV[i + 1] + 0 then
    redis.call('HINCRBY', KEYS[2], 'sum', -ARGV[4])
    return {0, field, spent, held - ARGV[4]}
  end
end
local seq = redis.call('HINCRBY', KEYS[2], 'seq', 1)
redis.call('ZADD', KEYS[3], now + ARGV[5], seq .. ':' .. ARGV[4])
return seq
"""
)

# KEYS: spend, held, open, lapsed. ARGV: (day), the hold's member, minus its amount, settled
# nanos (0 to release), then 'all' (add to the all-time total, never expire) or the spend's
# TTL ms. -> 1 when this call closed the hold, 0 when it was already closed.
# A hold is closed once: while it is open (in the open set), or, once it expired, while it
# is in the lapsed set; a second close finds it in neither. Nothing is remembered per closed
# hold. A release reads no clock.
_CLOSE = (
    """
if redis.call('ZREM', KEYS[3], ARGV[4]) == 1 then  -- open: its amount leaves the sum
  redis.call('HINCRBY', KEYS[2], 'sum', ARGV[5])
else  -- closed already, or lapsed (and then still closed once, within its time)
  local until_ms = redis.call('ZSCORE', KEYS[4], ARGV[4])
  if not until_ms then return 0 end
  redis.call('ZREM', KEYS[4], ARGV[4])
  local t = redis.call('TIME')
  if until_ms + 0 < t[1] * 1000 + math.floor(t[2] / 1000) then return 0 end
end
if ARGV[6] == '0' then return 1 end
local t = redis.call('TIME')
"""
    + _DAY
    + """
-- the TTL is set when the day's field is new (the spend outlives its month by far)
local first = redis.call('HINCRBY', KEYS[1], day, ARGV[6]) == ARGV[6] + 0
redis.call('HINCRBY', KEYS[1], month, ARGV[6])
if ARGV[7] == 'all' then
  redis.call('HINCRBY', KEYS[1], 'a:all', ARGV[6])
elseif first then
  redis.call('PEXPIRE', KEYS[1], ARGV[7])
end
return 1
"""
)

# KEYS: spend, held, open, lapsed. ARGV: (day). -> {day, month, all-time: spent + held}
_SPENT = (
    _CLOCK
    + _SWEEP
    + """
local held = (redis.call('HGET', KEYS[2], 'sum') or 0) + 0
if held ~= 0 and redis.call('ZCARD', KEYS[3]) == 0 then  -- none open (see the sweep)
  held = 0
  redis.call('HSET', KEYS[2], 'sum', 0)
end
local spent = redis.call('HMGET', KEYS[1], day, month, 'a:all')
return {(spent[1] or 0) + held, (spent[2] or 0) + held, (spent[3] or 0) + held}
"""
)

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
        self._reserve = self._scripts.register(_RESERVE)
        self._close = self._scripts.register(_CLOSE)
        self._spent = self._scripts.register(_SPENT)
        self._keys = KeyNames(self._key_names)  # a workspace's key names

    def __repr__(self) -> str:  # never the URL: it may carry a password
        return f"RedisBudgetStore(prefix={self._prefix!r})"

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
        connection), so the caller's lease leaves in the same write; the answer is read
        when awaited."""
        check_amount(amount_usd)
        check_totals(self._totals, total_usd)
        amount = nanos_up(amount_usd)
        args: list[str | int] = [*_today(), amount, self._hold_ms]
        for period, usd in zip("dma", (daily_usd, monthly_usd, total_usd), strict=True):
            if usd is not None:
                args += (period, int(usd * NANO))
        try:
            reply = self._reserve(keys=self._keys(workspace), args=args)
        except (RedisError, OSError) as exc:
            raise unreachable(self._name, exc) from None
        return self._reserved(reply, workspace, amount, (daily_usd, monthly_usd, total_usd))

    async def _reserved(
        self,
        reply: Awaitable[Any],
        workspace: str,
        amount: int,
        limits: tuple[float | None, float | None, float | None],
    ) -> Reservation:
        try:
            answer = await reply
        except (RedisError, OSError) as exc:
            raise unreachable(self._name, exc) from None
        if not isinstance(answer, list):
            return Reservation(workspace, amount / NANO, int(answer) * _SPAN + amount)
        _, field, spent, held = answer
        period = field.decode()
        name = _LIMITS[period[0]]
        limit = limits["dma".index(period[0])]
        check_limit(
            workspace, period[2:], name, float(limit or 0.0), int(spent), int(held), amount,
            scope=self._scope,
        )  # fmt: skip
        raise AssertionError(f"the budget script refused {name} on sums that fit")

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
        keys = self._keys(reservation.workspace)
        seq, amount = divmod(reservation.token, _SPAN)
        keep = "all" if self._totals else SPEND_TTL_MS
        args = [*_today(), f"{seq}:{amount}", -amount, cost, keep]
        sent = self._close.written(keys, args)
        if sent is not None:
            _IN_FLIGHT.add(sent)
            sent.add_done_callback(functools.partial(self._closed, reservation))
            return
        try:
            await self._close(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            self._unclosed(reservation, exc)

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
            day, month, total = await self._spent(keys=keys, args=_today())
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
    loop = asyncio.get_running_loop()
    sent = [f for f in _IN_FLIGHT if f.get_loop() is loop]
    if sent:
        await asyncio.wait(sent)

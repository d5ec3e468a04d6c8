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

# Redis TIME -> (now in ms, 'd:YYYY-MM-DD', 'm:YYYY-MM'); days_from_civil inverted
# (H. Hinnant's algorithm), because Lua in Redis has no date functions.
_CLOCK = """
local t = redis.call('TIME')
local secs = tonumber(t[1])
local now_ms = secs * 1000 + math.floor(tonumber(t[2]) / 1000)
local z = math.floor(secs / 86400) + 719468
local era = math.floor(z / 146097)
local doe = z - era * 146097
local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
  - math.floor(doe / 146096)) / 365)
local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
local mp = math.floor((5 * doy + 2) / 153)
local dd = doy - math.floor((153 * mp + 2) / 5) + 1
local mm = mp < 10 and mp + 3 or mp - 9
local yy = yoe + era * 400 + (mm <= 2 and 1 or 0)
local day = string.format('d:%04d-%02d-%02d', yy, mm, dd)
local month = 'm:' .. string.sub(day, 3, 9)
"""

# KEYS: spend, holds, expiries, lapsed. Drops expired holds; returns the sum of the open
# ones. The sum is kept in the holds hash (field 'sum': a hold's amount added when booked,
# taken off when closed or expired), so a reservation costs the same however many calls are
# in flight instead of adding every open hold up; holds booked before it are summed once.
# An expired hold's token moves to the lapsed set for LAPSED_MS, so the call's settle, if
# it comes after all (a process that stalled past the hold), still books its cost once.
_HELD = """
local function held_now(now_ms, lapsed_ms)
  local raw = redis.call('HGET', KEYS[2], 'sum')
  local held, dirty = tonumber(raw or '0'), raw == false
  if dirty then
    for _, v in ipairs(redis.call('HVALS', KEYS[2])) do held = held + tonumber(v) end
  end
  local gone = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now_ms)
  if #gone > 0 then
    local later = {}
    for i, tok in ipairs(gone) do
      held = held - tonumber(redis.call('HGET', KEYS[2], tok) or '0')
      redis.call('HDEL', KEYS[2], tok)
      later[2 * i - 1], later[2 * i] = now_ms + lapsed_ms, tok
    end
    redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now_ms)
    redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now_ms)
    for i = 1, #later, 200 do
      redis.call('ZADD', KEYS[4], unpack(later, i, math.min(i + 199, #later)))
    end
    redis.call('PEXPIRE', KEYS[4], lapsed_ms)
    dirty = true
  end
  if held ~= 0 and redis.call('ZCARD', KEYS[3]) == 0 then held, dirty = 0, true end  -- none open
  if dirty then redis.call('HSET', KEYS[2], 'sum', held) end
  return held
end
"""

# KEYS: spend, holds, expiries, lapsed, seq. ARGV: amount, day limit (-1 none), month
# limit, hold ms, total limit (-1 none; only a store that keeps totals passes one), lapsed ms.
# -> {token} or {0, the budget refused, spent that period, held, the period}
_RESERVE = (
    _CLOCK
    + _HELD
    + """
local held = held_now(now_ms, tonumber(ARGV[6]))
local amount = tonumber(ARGV[1])
local spent = redis.call('HMGET', KEYS[1], day, month, 'a:all')
local spent_d, spent_m = tonumber(spent[1] or '0'), tonumber(spent[2] or '0')
if ARGV[2] ~= '-1' and spent_d + held + amount > tonumber(ARGV[2]) then
  return {0, 'daily', tostring(spent_d), tostring(held), string.sub(day, 3)}
end
if ARGV[3] ~= '-1' and spent_m + held + amount > tonumber(ARGV[3]) then
  return {0, 'monthly', tostring(spent_m), tostring(held), string.sub(month, 3)}
end
local spent_t = tonumber(spent[3] or '0')
if ARGV[5] ~= '-1' and spent_t + held + amount > tonumber(ARGV[5]) then
  return {0, 'total', tostring(spent_t), tostring(held), 'all'}
end
local tok = redis.call('INCR', KEYS[5])
redis.call('HSET', KEYS[2], tok, ARGV[1], 'sum', held + amount)
redis.call('ZADD', KEYS[3], now_ms + tonumber(ARGV[4]), tok)
return {tok}
"""
)

# KEYS: spend, holds, expiries, lapsed. ARGV: token, settled nanos (0 to release), spend
# TTL ms (0: the spend never expires), '1' to add to the all-time total.
# -> 1 when this call closed the token, 0 when it was already closed.
# A token is closed once: while its hold is open (in the holds hash), or, once the hold
# expired, while it is in the lapsed set; a second close finds it in neither. Nothing is
# remembered per closed token (it used to be kept two days, a set as large as two days of
# calls).
_CLOSE = (
    _CLOCK
    + """
local hold = redis.call('HMGET', KEYS[2], ARGV[1], 'sum')
if hold[1] then  -- open: its amount leaves the running sum
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
  if hold[2] then redis.call('HSET', KEYS[2], 'sum', tonumber(hold[2]) - tonumber(hold[1])) end
else  -- closed already, or lapsed (and then still closed once, within its time)
  local until_ms = redis.call('ZSCORE', KEYS[4], ARGV[1])
  if not until_ms then return 0 end
  redis.call('ZREM', KEYS[4], ARGV[1])
  if tonumber(until_ms) < now_ms then return 0 end
end
local cost = tonumber(ARGV[2])
if cost > 0 then
  -- the TTL is set when the day's field is new (the spend outlives its month by far)
  local first = redis.call('HINCRBY', KEYS[1], day, cost) == cost
  redis.call('HINCRBY', KEYS[1], month, cost)
  if ARGV[4] == '1' then redis.call('HINCRBY', KEYS[1], 'a:all', cost) end
  if first and tonumber(ARGV[3]) > 0 then redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3])) end
end
return 1
"""
)

# KEYS: spend, holds, expiries, lapsed. ARGV: lapsed ms. -> {day, month, all-time: spent + held}
_SPENT = (
    _CLOCK
    + _HELD
    + """
local held = held_now(now_ms, tonumber(ARGV[1]))
local spent = redis.call('HMGET', KEYS[1], day, month, 'a:all')
local d, m, a = tonumber(spent[1] or '0'), tonumber(spent[2] or '0'), tonumber(spent[3] or '0')
return {tostring(d + held), tostring(m + held), tostring(a + held)}
"""
)


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
        # "done" is the lapsed set (it once held every closed token: see _CLOSE)
        return tuple(f"{base}:{part}" for part in ("spend", "holds", "exp", "done", "seq"))

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
        day, month, total = (
            -1 if v is None else int(v * NANO) for v in (daily_usd, monthly_usd, total_usd)
        )
        try:
            reply = self._reserve(
                keys=self._keys(workspace),
                args=[amount, day, month, self._hold_ms, total, LAPSED_MS],
            )
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
        token = int(answer[0])
        if token == 0:
            refused, spent, held, period = answer[1:]
            name = refused.decode()
            daily_usd, monthly_usd, total_usd = limits
            limit = {"daily": daily_usd, "monthly": monthly_usd}.get(name, total_usd)
            check_limit(
                workspace, period.decode(), name, float(limit or 0.0), int(spent), int(held),
                amount, scope=self._scope,
            )  # fmt: skip
        return Reservation(workspace, amount / NANO, token)

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
        keys = self._keys(reservation.workspace)[:4]
        args = [reservation.token, cost, self._spend_ttl_ms, int(self._totals)]
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
        keys = self._keys(workspace)[:4]
        try:
            day, month, total = await self._spent(keys=keys, args=[LAPSED_MS])
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

"""The Lua scripts of the Redis budget store (engine/state/redis_budget.py); they take
their numbers packed (redis_common.packed). Why they look as they do: see the measured
costs below."""

from __future__ import annotations

#: How long an expired hold can still be settled (its cost booked once) or released.
LAPSED_MS = 2 * 86_400_000


# Measured with callgrind on redis-server 7.0 (instructions per script, docs/state.md): a
# redis.call costs 3,500-8,000, a KEYS/ARGV entry ~1,200, a Lua number turned into a string
# ~4,200, `tonumber` ~2,100 (it converts twice; arithmetic on the string, `s + 0`, once),
# a closure ~1,400. So the scripts are straight-line code that calls Redis little, converts
# little and takes few arguments: the numbers they compute with come packed in one (`packed`),
# the strings they hand to Redis as they are.

# The server's day and month (its TIME: replicas whose clocks differ still agree), from
# `t = TIME`. The caller sends its guess (`today`, the day's number since the epoch, and
# ARGV 1-2: 'd:YYYY-MM-DD', 'm:YYYY-MM'), kept when it is the server's day; only a wrong
# guess (a replica's clock off near midnight) has the names built here, by days_from_civil
# inverted (H. Hinnant's algorithm; Lua has no dates). Building them every call cost ~14,000.
DAY = """
local day, month = ARGV[1], ARGV[2]
if math.floor(t[1] / 86400) ~= today then
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
CLOCK = (
    """
local t = redis.call('TIME')
local now = t[1] .. string.sub('00000' .. t[2], -6, -4)
"""
    + DAY
)

# KEYS: spend, held, open, lapsed; with `now` -> `gone`, the holds swept. An open hold is a
# member 'sequence:amount' of the open
# set, scored by its expiry; the held hash keeps `sum`, the sum of their amounts (changed in
# the same script as the set, so a reservation costs the same however many calls are in
# flight), and `seq`, the last sequence number. The member carries the amount, so a close is
# one ZREM and one HINCRBY (a hash of amounts took two calls more). A script cut short (Redis
# does not roll back) leaves the sum too high, never too low: it grows before the set does
# and shrinks after. Expired holds are dropped here (the sum must not count the hold being
# reserved: a set left empty resets it); each one's member moves to the lapsed
# set for LAPSED_MS, so the call's settle, if it comes after all (a process that stalled past
# the hold), still books its cost once.
SWEEP = """
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

# KEYS: spend, held, open, lapsed. ARGV: (day), amount, packed: today, hold ms and the
# day's, month's and all-time limits (-1: none). -> the hold's sequence number, or
# {0, the refused period's field, spent in it, held}. The sum is read by adding the amount
# (HINCRBY answers a number, where a read answered a string to convert) and given back on
# a refusal; only the periods with a limit are read (HMGET of all three cost ~4,000 more).
# Expired holds are swept when they would refuse the call (then it is checked again) and
# on every 64th hold, not on every call (the sweep's ZRANGEBYSCORE cost ~6,000): until then
# they count, so the sum stays an upper bound, and an expired hold never refuses a call.
RESERVE = (
    """
local today, hold_ms, limit_d, limit_m, limit_a = struct.unpack('<ddddd', ARGV[4])
"""
    + CLOCK
    + """
local limits = {day, limit_d, month, limit_m, 'a:all', limit_a}
for pass = 1, 2 do
  local held, refused = redis.call('HINCRBY', KEYS[2], 'sum', ARGV[3]), nil
  for i = 1, 5, 2 do
    if limits[i + 1] >= 0 and not refused then
      local spent = (redis.call('HGET', KEYS[1], limits[i]) or 0) + 0
      if spent + held > limits[i + 1] then refused = {0, limits[i], spent, held - ARGV[3]} end
    end
  end
  if not refused then
    local seq = redis.call('HINCRBY', KEYS[2], 'seq', 1)
    redis.call('ZADD', KEYS[3], now + hold_ms, seq .. ':' .. ARGV[3])
    if seq % 64 == 0 then"""
    + SWEEP
    + """    end
    return seq
  end
  redis.call('HINCRBY', KEYS[2], 'sum', -ARGV[3])
  if pass == 2 then return refused end"""
    + SWEEP
    + """  if #gone == 0 then return refused end
end
"""
)

# Books `booked` (the cost as a string; `cost`, the same as a number) on the server's day
# and month, into KEYS[1] (spend); `today` and `ttl_ms` as in CLOSE.
BOOKING = (
    """
local t = redis.call('TIME')
"""
    + DAY
    + """
-- the TTL is set when the day's field is new (the spend outlives its month by far)
local first = redis.call('HINCRBY', KEYS[1], day, booked) == cost
redis.call('HINCRBY', KEYS[1], month, booked)
if ttl_ms < 0 then
  redis.call('HINCRBY', KEYS[1], 'a:all', booked)
elseif first then
  redis.call('PEXPIRE', KEYS[1], ttl_ms)
end
return 1
"""
)

# KEYS: spend, held, open, lapsed. ARGV: (day), the hold's member, minus its amount, settled
# nanos (0 to release), packed: today, settled nanos, the spend's TTL ms (-1: it never
# expires and the cost is added to the all-time total too). -> 1 when this call closed the
# hold, 0 when it was already closed.
# A hold is closed once: while it is open (in the open set), or, once it expired, while it
# is in the lapsed set; a second close finds it in neither. Nothing is remembered per closed
# hold. A release reads no clock.
CLOSE = (
    """
if redis.call('ZREM', KEYS[3], ARGV[3]) == 1 then  -- open: its amount leaves the sum
  redis.call('HINCRBY', KEYS[2], 'sum', ARGV[4])
else  -- closed already, or lapsed (and then still closed once, within its time)
  local until_ms = redis.call('ZSCORE', KEYS[4], ARGV[3])
  if not until_ms then return 0 end
  redis.call('ZREM', KEYS[4], ARGV[3])
  local t = redis.call('TIME')
  if until_ms + 0 < t[1] * 1000 + math.floor(t[2] / 1000) then return 0 end
end
if ARGV[5] == '0' then return 1 end
local booked, today, cost, ttl_ms = ARGV[5], struct.unpack('<ddd', ARGV[6])
"""
    + BOOKING
)

# KEYS: spend, held, open, lapsed. ARGV: (day), today. -> {day, month, all-time: spent + held}
SPENT = (
    """
local today = ARGV[3] + 0
"""
    + CLOCK
    + SWEEP
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

# KEYS: spend. ARGV: (day), settled nanos, packed: today, settled nanos, the spend's TTL ms
# (-1 as in CLOSE). -> 1. The cost of a call held in room booked ahead
# (redis_budget_ahead.py): that room stays held until its replica gives it back, so only
# the spend is booked (the replica closes each call once; nothing to find here).
BOOK = (
    """
local booked, today, cost, ttl_ms = ARGV[3], struct.unpack('<ddd', ARGV[4])
"""
    + BOOKING
)

# KEYS: spend, held, open, lapsed. ARGV: (day), amount, packed: today, hold ms, the day's,
# month's and all-time limits (-1: none), `want` and `ahead`. -> {sequence number, nanos
# held}, or a refusal as RESERVE's. Holds `want` (room booked ahead, redis_budget_ahead.py)
# when every limited period has `ahead` times the amount left, capped at a quarter of the
# least room left; otherwise exactly the amount, refused as RESERVE refuses. Amounts are
# written with %d: Lua writes a number above 1e14 as '1e+14', which the member must not be.
GRANT = (
    """
local today, hold_ms, limit_d, limit_m, limit_a, want, ahead = struct.unpack('<ddddddd', ARGV[4])
"""
    + CLOCK
    + """
local limits, amount = {day, limit_d, month, limit_m, 'a:all', limit_a}, ARGV[3] + 0
for pass = 1, 2 do
  local held, room, refused = (redis.call('HGET', KEYS[2], 'sum') or 0) + 0, nil, nil
  for i = 1, 5, 2 do
    if limits[i + 1] >= 0 and not refused then
      local spent = (redis.call('HGET', KEYS[1], limits[i]) or 0) + 0
      local left = limits[i + 1] - spent - held
      if left < amount then refused = {0, limits[i], spent, held}
      elseif not room or left < room then room = left end
    end
  end
  if not refused then
    local grant = amount
    if room and room >= ahead * amount then
      grant = math.max(amount, math.min(want, math.floor(room / 4)))
    end
    grant = string.format('%d', grant)
    redis.call('HINCRBY', KEYS[2], 'sum', grant)
    local seq = redis.call('HINCRBY', KEYS[2], 'seq', 1)
    redis.call('ZADD', KEYS[3], now + hold_ms, seq .. ':' .. grant)
    if seq % 64 == 0 then"""
    + SWEEP
    + """    end
    return {seq, grant}
  end
  if pass == 2 then return refused end"""
    + SWEEP
    + """  if #gone == 0 then return refused end
end
"""
)

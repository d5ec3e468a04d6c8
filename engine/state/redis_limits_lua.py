"""The Lua scripts behind `RedisRateLimiter`, one per operation, each atomic in Redis.

Per key of a pool there are two hashes (both under the provider's hash tag):
  W  the window: field "<unix second>:<dim>" -> amount booked in that second
     (dim 1 requests, 2 input tokens, 3 output tokens, 4 total tokens);
  M  the key's meta: lim<d> learned limit, rem<d>/rst<d> the provider's remaining figure
     and when it resets (ms), blocked (ms, Retry-After), inflight.
W also keeps the running sums of its slices (u1..u4) and the oldest second they count
from (t), so a call reads four numbers instead of every slice of the last minute (measured
in docs/state.md); a window without them (idle over a minute, or written before them) is
summed from its slices once. A missing limit is -1. Times are the Redis server's (`TIME`),
so replicas agree, unless the first ARGV gives one in ms (>= 0; the scripts read their own
arguments from `A`, the ARGV after it): tests drive the window with an injected clock that
way. Usage booked in second s counts until s + 61: a slice leaves the window 60 s after its
end, as in-process, never early.
"""

from __future__ import annotations

_NOW = """
local given = tonumber(ARGV[1])
local A = {}  -- the script's own arguments, after the time
for i = 2, #ARGV do A[i - 1] = ARGV[i] end
local now_ms
if given >= 0 then
  now_ms = given
else
  local t = redis.call('TIME')
  now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local sec = math.floor(now_ms / 1000)
"""

# The helpers a script needs, after _NOW (each script takes only those it uses: defining a
# function costs the server a little on every run).
_FIELDS = """
-- Field names as constants: each Lua string built at run time ('lim' .. d) costs about a
-- microsecond of the server's CPU, and a call used to build dozens.
local LIM = {'lim1', 'lim2', 'lim3', 'lim4'}
local REM = {'rem1', 'rem2', 'rem3', 'rem4'}
local RST = {'rst1', 'rst2', 'rst3', 'rst4'}
local function fields(s)  -- second s's four field names
  local p = s .. ':'
  return {p .. '1', p .. '2', p .. '3', p .. '4'}
end
"""

_META = """
local function meta(M)
  local raw = redis.call('HGETALL', M)
  local m = {}
  for i = 1, #raw, 2 do m[raw[i]] = tonumber(raw[i + 1]) end
  return m
end
local function effective(m, configured, d)
  local lim = configured
  local learned = m[LIM[d]] or -1
  if learned >= 0 and (lim < 0 or learned < lim) then lim = learned end
  return lim
end
"""

_WINDOW = """
local function slice(W, s)  -- second s's four fields, their amounts (0 when absent), any?
  local f = fields(s)
  local v = redis.call('HMGET', W, f[1], f[2], f[3], f[4])
  local n = {tonumber(v[1]) or 0, tonumber(v[2]) or 0, tonumber(v[3]) or 0, tonumber(v[4]) or 0}
  return f, n, v[1] or v[2] or v[3] or v[4]
end
local function rebuild(W)  -- the sums from every slice: a window without them, or idle long
  local used = {0, 0, 0, 0}
  local raw = redis.call('HGETALL', W)
  for i = 1, #raw, 2 do
    local cut = string.find(raw[i], ':', 1, true)
    if cut then
      local s, d = tonumber(string.sub(raw[i], 1, cut - 1)), tonumber(string.sub(raw[i], cut + 1))
      if s < sec - 60 then  -- second s ends at s + 1 and leaves the window 60 s later
        redis.call('HDEL', W, raw[i])
      else
        used[d] = used[d] + tonumber(raw[i + 1])
      end
    end
  end
  return used
end
local function save(W, tail, used)  -- only when the tail moved: at most once a second
  redis.call('HSET', W, 't', tail, 'u1', used[1], 'u2', used[2], 'u3', used[3], 'u4', used[4])
  redis.call('PEXPIRE', W, 120000)
end
-- The window's usage per dimension: running sums ('u1'..'u4') of the slices from 't' on,
-- kept up to date by every booking and correction; the slices that left the window since
-- the last call are subtracted here (one HMGET per second passed), so a call costs the same
-- whatever the traffic, instead of reading 60 seconds of slices every time. The same HMGET
-- reads the fields `cur` names (the second a booking goes to). -> the sums, their tail, the
-- values of `cur` (0 when absent), and whether the tail moved (the TTLs were renewed then:
-- a booking in the second of the last renewal needs none).
local function window(W, cur)
  local st
  if cur then
    st = redis.call('HMGET', W, 't', 'u1', 'u2', 'u3', 'u4', cur[1], cur[2], cur[3], cur[4])
  else
    st = redis.call('HMGET', W, 't', 'u1', 'u2', 'u3', 'u4')
  end
  local now = {tonumber(st[6]) or 0, tonumber(st[7]) or 0, tonumber(st[8]) or 0,
               tonumber(st[9]) or 0}
  local tail = tonumber(st[1])
  local used
  if tail == nil or sec - 60 - tail > 61 then
    used, tail = rebuild(W), sec - 60
    save(W, tail, used)
    return used, tail, now, true
  end
  used = {tonumber(st[2]), tonumber(st[3]), tonumber(st[4]), tonumber(st[5])}
  if tail >= sec - 60 then return used, tail, now, false end
  while tail < sec - 60 do
    local f, v, any = slice(W, tail)
    if any then
      for d = 1, 4 do used[d] = used[d] - v[d] end
      redis.call('HDEL', W, f[1], f[2], f[3], f[4])
    end
    tail = tail + 1
  end
  save(W, tail, used)
  return used, tail, now, true
end
local function first(W, tail)  -- the oldest second with usage still in the window, or nil
  for s = tail, sec do
    local _, _, any = slice(W, s)
    if any then return s end
  end
  return nil
end
"""

#: KEYS: W1, M1, W2, M2, ...  ARGV: input, output, then per key rpm, input_tpm, output_tpm.
#: -> {key index (1-based), booked second} or {0, ms until room may appear}
#: The booking is one HSET on the window (the second's slices and the sums) and one on the
#: meta (in flight, remaining figures): five commands a call on a one-key pool.
ACQUIRE = (
    _NOW
    + _FIELDS
    + _META
    + _WINDOW
    + """
local need = {1, tonumber(A[1]), tonumber(A[2]), tonumber(A[1]) + tonumber(A[2])}
local cur = fields(sec)
local best, best_room, best_flight, wait_ms = 0, -1, 0, 60000
local metas, sums, tails, nows, moved = {}, {}, {}, {}, {}
for k = 1, #KEYS / 2 do
  local W, M = KEYS[2 * k - 1], KEYS[2 * k]
  local m = meta(M)
  local used, tail, now, mv = window(W, cur)
  metas[k], sums[k], tails[k], nows[k], moved[k] = m, used, tail, now, mv
  local cfg = {tonumber(A[3 * k]), tonumber(A[3 * k + 1]), tonumber(A[3 * k + 2]), -1}
  local fits, room, ready, oldest = true, 1.0, now_ms, nil
  if (m['blocked'] or 0) > now_ms then fits = false; ready = m['blocked'] end
  for d = 1, 4 do
    local lim, n = effective(m, cfg[d], d), need[d]
    if lim >= 0 then
      if n > lim then n = lim end  -- larger than a whole limit: wait for an empty window
      local left = lim - used[d] - n
      if left < 0 then
        fits = false
        oldest = oldest or first(W, tail) or sec
        ready = math.max(ready, (oldest + 61) * 1000)
      elseif lim > 0 then
        room = math.min(room, left / lim)
      end
    end
    local rem, rst = m[REM[d]] or -1, m[RST[d]] or 0
    if rem >= 0 and rst > now_ms and n > rem then
      fits = false
      ready = math.max(ready, rst)
    end
  end
  local flight = m['inflight'] or 0
  if fits then
    if room > best_room or (room == best_room and flight < best_flight) then
      best, best_room, best_flight = k, room, flight
    end
  elseif ready - now_ms < wait_ms then
    wait_ms = ready - now_ms
  end
end
if best == 0 then return {0, math.max(wait_ms, 1)} end
local W, M = KEYS[2 * best - 1], KEYS[2 * best]
local m, used, now = metas[best], sums[best], nows[best]
local w = {'t', math.min(tails[best], sec)}
local mm = {'inflight', (m['inflight'] or 0) + 1}
for d = 1, 4 do
  if need[d] > 0 then
    used[d] = used[d] + need[d]
    w[#w + 1] = cur[d]
    w[#w + 1] = now[d] + need[d]
  end
  local rem, rst = m[REM[d]] or -1, m[RST[d]] or 0
  if rem >= 0 and rst > now_ms then
    mm[#mm + 1] = REM[d]
    mm[#mm + 1] = math.max(0, rem - need[d])
  end
end
redis.call('HSET', W, 'u1', used[1], 'u2', used[2], 'u3', used[3], 'u4', used[4], unpack(w))
redis.call('HSET', M, unpack(mm))
if moved[best] then redis.call('PEXPIRE', M, 86400000) end
return {best, sec}
"""
)

#: KEYS: W, M.  ARGV: booked second, request delta (0 settle, -1 release), input delta,
#: output delta (real minus estimate).
#: One HMGET and one HSET on the window, one HSET on the meta (when it exists).
CLOSE = (
    _NOW
    + _FIELDS
    + _META
    + """
local slot = tonumber(A[1])
local delta = {tonumber(A[2]), tonumber(A[3]), tonumber(A[4]),
               tonumber(A[3]) + tonumber(A[4])}
local W, M = KEYS[1], KEYS[2]
local m = meta(M)
local booked = slot >= sec - 60  -- a slice that left the window is not corrected
if booked then
  local f = fields(slot)
  local st = redis.call('HMGET', W, 't', 'u1', 'u2', 'u3', 'u4', f[1], f[2], f[3], f[4])
  local tail = tonumber(st[1])
  local used = {tonumber(st[2]), tonumber(st[3]), tonumber(st[4]), tonumber(st[5])}
  local counted = tail ~= nil and slot >= tail  -- in the running sums
  local sets, dels = {}, {}
  for d = 1, 4 do
    if delta[d] ~= 0 then
      local old = tonumber(st[5 + d]) or 0
      local new = old + delta[d]
      if new > 0 then
        sets[#sets + 1] = f[d]
        sets[#sets + 1] = new
      else
        dels[#dels + 1] = f[d]
      end
      if counted then used[d] = used[d] + math.max(new, 0) - old end
    end
  end
  if counted then
    redis.call('HSET', W, 'u1', used[1], 'u2', used[2], 'u3', used[3], 'u4', used[4], unpack(sets))
  else
    if #sets > 0 then redis.call('HSET', W, unpack(sets)) end
    if tail ~= nil then dels[#dels + 1] = 't' end  -- before the sums' start: summed again
  end
  if #dels > 0 then redis.call('HDEL', W, unpack(dels)) end
end
local mm = {}
if m['inflight'] then
  mm[1] = 'inflight'
  mm[2] = math.max(0, m['inflight'] - 1)
end
for d = 1, 4 do
  local rem, rst = m[REM[d]] or -1, m[RST[d]] or 0
  if delta[d] ~= 0 and rem >= 0 and rst > now_ms then
    mm[#mm + 1] = REM[d]
    mm[#mm + 1] = math.max(0, rem - delta[d])
  end
end
if #mm > 0 then redis.call('HSET', M, unpack(mm)) end
return 1
"""
)

#: KEYS: W, M.  ARGV: limit/remaining x 4 dims (-1 absent), request reset ms, token reset
#: ms, retry-after ms.
OBSERVE = (
    _NOW
    + _FIELDS
    + """
local M = KEYS[2]
for d = 1, 4 do
  local lim, rem = tonumber(A[2 * d - 1]), tonumber(A[2 * d])
  if lim > 0 then redis.call('HSET', M, LIM[d], lim) end
  if rem >= 0 then
    local reset = d == 1 and tonumber(A[9]) or tonumber(A[10])
    redis.call('HSET', M, REM[d], rem, RST[d], now_ms + reset)
  end
end
local retry = tonumber(A[11])
if retry > 0 then
  local blocked = tonumber(redis.call('HGET', M, 'blocked') or '0')
  if now_ms + retry > blocked then redis.call('HSET', M, 'blocked', now_ms + retry) end
end
redis.call('PEXPIRE', M, 86400000)
return 1
"""
)

#: KEYS: W, M.  ARGV: rpm, input_tpm, output_tpm.
#: -> {limit, remaining, used} x 4 dims, inflight, ms still blocked
STATUS = (
    _NOW
    + _FIELDS
    + _META
    + _WINDOW
    + """
local m = meta(KEYS[2])
local used = window(KEYS[1])
local cfg = {tonumber(A[1]), tonumber(A[2]), tonumber(A[3]), -1}
local out = {}
for d = 1, 4 do
  local lim = effective(m, cfg[d], d)
  local remaining = -1
  if lim >= 0 then remaining = math.max(0, lim - used[d]) end
  local rem, rst = m[REM[d]] or -1, m[RST[d]] or 0
  if rem >= 0 and rst > now_ms and (remaining < 0 or rem < remaining) then remaining = rem end
  table.insert(out, lim); table.insert(out, remaining); table.insert(out, used[d])
end
table.insert(out, m['inflight'] or 0)
table.insert(out, math.max(0, (m['blocked'] or 0) - now_ms))
return out
"""
)

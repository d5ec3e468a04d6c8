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
local function meta(M)
  local raw = redis.call('HGETALL', M)
  local m = {}
  for i = 1, #raw, 2 do m[raw[i]] = tonumber(raw[i + 1]) end
  return m
end
local function effective(m, configured, d)
  local lim = configured
  local learned = m['lim' .. d] or -1
  if learned >= 0 and (lim < 0 or learned < lim) then lim = learned end
  return lim
end
local function slice(W, s)  -- second s's four fields, their amounts (0 when absent), any?
  local f = {s .. ':1', s .. ':2', s .. ':3', s .. ':4'}
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
local function save(W, tail, used)
  redis.call('HSET', W, 't', tail, 'u1', used[1], 'u2', used[2], 'u3', used[3], 'u4', used[4])
  redis.call('PEXPIRE', W, 120000)
end
-- The window's usage per dimension: running sums ('u1'..'u4') of the slices from 't' on,
-- kept up to date by every booking and correction; the slices that left the window since
-- the last call are subtracted here (one HMGET per second passed), so a call costs the same
-- whatever the traffic, instead of reading 60 seconds of slices every time.
local function window(W)
  local st = redis.call('HMGET', W, 't', 'u1', 'u2', 'u3', 'u4')
  local tail = tonumber(st[1])
  local used
  if tail == nil or sec - 60 - tail > 61 then
    used, tail = rebuild(W), sec - 60
    save(W, tail, used)
    return used, tail
  end
  used = {tonumber(st[2]), tonumber(st[3]), tonumber(st[4]), tonumber(st[5])}
  if tail >= sec - 60 then return used, tail end
  while tail < sec - 60 do
    local f, v, any = slice(W, tail)
    if any then
      for d = 1, 4 do used[d] = used[d] - v[d] end
      redis.call('HDEL', W, f[1], f[2], f[3], f[4])
    end
    tail = tail + 1
  end
  save(W, tail, used)
  return used, tail
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
ACQUIRE = (
    _NOW
    + """
local need = {1, tonumber(A[1]), tonumber(A[2]), tonumber(A[1]) + tonumber(A[2])}
local best, best_room, best_flight, wait_ms = 0, -1, 0, 60000
local metas, sums, tails = {}, {}, {}
for k = 1, #KEYS / 2 do
  local W, M = KEYS[2 * k - 1], KEYS[2 * k]
  local m = meta(M)
  local used, tail = window(W)
  metas[k], sums[k], tails[k] = m, used, tail
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
    local rem, rst = m['rem' .. d] or -1, m['rst' .. d] or 0
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
local m, used = metas[best], sums[best]
for d = 1, 4 do
  if need[d] > 0 then
    redis.call('HINCRBY', W, sec .. ':' .. d, need[d])
    used[d] = used[d] + need[d]
  end
  local rem, rst = m['rem' .. d] or -1, m['rst' .. d] or 0
  if rem >= 0 and rst > now_ms then
    redis.call('HSET', M, 'rem' .. d, math.max(0, rem - need[d]))
  end
end
save(W, math.min(tails[best], sec), used)
redis.call('HINCRBY', M, 'inflight', 1)
redis.call('PEXPIRE', M, 86400000)
return {best, sec}
"""
)

#: KEYS: W, M.  ARGV: booked second, request delta (0 settle, -1 release), input delta,
#: output delta (real minus estimate).
CLOSE = (
    _NOW
    + """
local slot = tonumber(A[1])
local delta = {tonumber(A[2]), tonumber(A[3]), tonumber(A[4]),
               tonumber(A[3]) + tonumber(A[4])}
local W, M = KEYS[1], KEYS[2]
local m = meta(M)
local st = redis.call('HMGET', W, 't', 'u1', 'u2', 'u3', 'u4')
local tail = tonumber(st[1])
local used = {tonumber(st[2]), tonumber(st[3]), tonumber(st[4]), tonumber(st[5])}
local booked = slot >= sec - 60  -- a slice that left the window is not corrected
local counted = booked and tail ~= nil and slot >= tail  -- in the running sums
for d = 1, 4 do
  if delta[d] ~= 0 then
    if booked then
      local field = slot .. ':' .. d
      local old = tonumber(redis.call('HGET', W, field) or '0')
      local new = old + delta[d]
      if new > 0 then redis.call('HSET', W, field, new) else redis.call('HDEL', W, field) end
      if counted then used[d] = used[d] + math.max(new, 0) - old end
    end
    local rem, rst = m['rem' .. d] or -1, m['rst' .. d] or 0
    if rem >= 0 and rst > now_ms then
      redis.call('HSET', M, 'rem' .. d, math.max(0, rem - delta[d]))
    end
  end
end
if counted then
  redis.call('HSET', W, 'u1', used[1], 'u2', used[2], 'u3', used[3], 'u4', used[4])
elseif booked and tail ~= nil then  -- before the sums' start: counted from the slices again
  redis.call('HDEL', W, 't')
end
if redis.call('HINCRBY', M, 'inflight', -1) < 0 then redis.call('HSET', M, 'inflight', 0) end
return 1
"""
)

#: KEYS: W, M.  ARGV: limit/remaining x 4 dims (-1 absent), request reset ms, token reset
#: ms, retry-after ms.
OBSERVE = (
    _NOW
    + """
local M = KEYS[2]
for d = 1, 4 do
  local lim, rem = tonumber(A[2 * d - 1]), tonumber(A[2 * d])
  if lim > 0 then redis.call('HSET', M, 'lim' .. d, lim) end
  if rem >= 0 then
    local reset = d == 1 and tonumber(A[9]) or tonumber(A[10])
    redis.call('HSET', M, 'rem' .. d, rem, 'rst' .. d, now_ms + reset)
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
    + """
local m = meta(KEYS[2])
local used = window(KEYS[1])
local cfg = {tonumber(A[1]), tonumber(A[2]), tonumber(A[3]), -1}
local out = {}
for d = 1, 4 do
  local lim = effective(m, cfg[d], d)
  local remaining = -1
  if lim >= 0 then remaining = math.max(0, lim - used[d]) end
  local rem, rst = m['rem' .. d] or -1, m['rst' .. d] or 0
  if rem >= 0 and rst > now_ms and (remaining < 0 or rem < remaining) then remaining = rem end
  table.insert(out, lim); table.insert(out, remaining); table.insert(out, used[d])
end
table.insert(out, m['inflight'] or 0)
table.insert(out, math.max(0, (m['blocked'] or 0) - now_ms))
return out
"""
)

"""The Lua scripts behind `RedisRateLimiter`, one per operation, each atomic in Redis.

Per key of a pool there are two keys (both under the provider's hash tag):
  S  the key's state, one string of 24 doubles packed with Lua's `struct` (layout below):
     the current second's slice, the window's running sums and their tail, the learned
     limits, the provider's remaining figures and their resets, the Retry-After block and
     the requests in flight;
  H  the window's older slices: field "<unix second>" -> that second's four amounts packed
     the same way (requests, input tokens, output tokens, total tokens).
A call reads S (GET), books into its current slice and writes it back (SET, with the TTL
in the same command); H is touched only when a booking lands in a new second (the
previous slice moves there), when slices leave the window (at most once a second) and
when a correction reaches an older second. Why a packed string: Lua in Redis pays about
a microsecond for every number it turns into a string or back and for every redis.call,
and the hashes this replaced (a field per second and dimension, a field per meta figure)
cost 50-70 us of the server's CPU per script; packing and unpacking 24 doubles is one C
call each (measured in docs/state.md).

A missing limit is -1. Times are the Redis server's (`TIME`), so replicas agree, unless
the script's last number gives one in ms (>= 0): tests drive the window with an injected
clock that way. Usage booked in
second s counts until s + 61: a slice leaves the window 60 s after its end, as
in-process, never early.
"""

from __future__ import annotations

#: Redis key suffixes of a pool key's state and history. New names, not the hashes' "w"
#: and "m": a replica of the previous version reads only its own layout (a rolling upgrade
#: counts the two versions apart for at most a minute; learned limits come back with the
#: next answer's headers).
STATE, HISTORY = "s", "h"


_NOW = """
local max, min, floor = math.max, math.min, math.floor
local A = {struct.unpack('<' .. string.rep('d', #ARGV[1] / 8), ARGV[1])}  -- redis_common.packed
local now_ms = A[#ARGV[1] / 8]
if now_ms < 0 then
  local t = redis.call('TIME')
  now_ms = tonumber(t[1]) * 1000 + floor(tonumber(t[2]) / 1000)
end
local sec = floor(now_ms / 1000)
"""

# S's layout: s[CUR] the current slice's second and s[C + d] its amounts (d = 1..4); s[T]
# the oldest second the sums count from and s[U + d] the sums (every slice from s[T] on,
# the current one included); s[LIM + d] learned limits; s[REM + d] / s[RST + d] the
# provider's remaining figure and when it resets (ms); s[BLOCKED] (ms); s[INFLIGHT].
_STATE = """
local FMT, SLICE = '<dddddddddddddddddddddddd', '<dddd'
local CUR, C, T, U, LIM, REM, RST, BLOCKED, INFLIGHT = 1, 1, 6, 6, 10, 14, 18, 23, 24
-- renew: the TTL too, a day from now (a key's first write, then once a second as bookings
-- open new seconds); otherwise the SET keeps it (PX costs the server ~7k instructions more:
-- it rewrites the command with an absolute time for replication).
local function save(S, s, renew)
  local packed = struct.pack(FMT, unpack(s, 1, 24))
  if renew then
    redis.call('SET', S, packed, 'PX', '86400000')
  else
    redis.call('SET', S, packed, 'KEEPTTL')
  end
end
local function fresh(H)  -- a key seen for the first time, or whose state was lost
  local s = {sec, 0, 0, 0, 0, sec - 60, 0, 0, 0, 0, -1, -1, -1, -1, -1, -1, -1, -1,
             0, 0, 0, 0, 0, 0}
  local raw = redis.call('HGETALL', H)  -- slices whose state went: count them once
  for i = 1, #raw, 2 do
    local second = tonumber(raw[i])
    if second >= sec - 60 then
      local v = {struct.unpack(SLICE, raw[i + 1])}
      for d = 1, 4 do s[U + d] = s[U + d] + v[d] end
    end
  end
  return s
end
local function load(S, H)  -- -> the state, and whether it was missing
  local raw = redis.call('GET', S)
  if raw then return {struct.unpack(FMT, raw)}, false end
  return fresh(H), true
end
local function effective(s, configured, d)
  local lim, learned = configured, s[LIM + d]
  if learned >= 0 and (lim < 0 or learned < lim) then lim = learned end
  return lim
end
"""

_WINDOW = """
-- Bring the window to `sec`: the slices that left it since the last call are taken off the
-- sums (one HMGET of the seconds passed, at most once a second). -> whether S changed.
local function advance(s, H)
  local tail = s[T]
  if tail >= sec - 60 then return false end
  if sec - 60 - tail > 61 then  -- idle over a minute: every slice booked has left
    for d = 1, 4 do s[C + d], s[U + d] = 0, 0 end
    s[CUR], s[T] = sec, sec - 60
    redis.call('DEL', H)
    return true
  end
  local names = {}
  for x = tail, min(sec - 61, s[CUR] - 1) do names[#names + 1] = tostring(x) end
  if #names > 0 then
    local v, gone = redis.call('HMGET', H, unpack(names)), {}
    for i = 1, #names do
      if v[i] then
        local a = {struct.unpack(SLICE, v[i])}
        for d = 1, 4 do s[U + d] = s[U + d] - a[d] end
        gone[#gone + 1] = names[i]
      end
    end
    if #gone > 0 then redis.call('HDEL', H, unpack(gone)) end
  end
  if s[CUR] < sec - 60 then  -- the current slice left too
    for d = 1, 4 do s[U + d], s[C + d] = s[U + d] - s[C + d], 0 end
    s[CUR] = sec
  end
  s[T] = sec - 60
  return true
end
-- The oldest second whose slice still holds usage (room appears 61 s after it), or nil.
local function first(s, H)
  local names = {}
  for x = s[T], s[CUR] - 1 do names[#names + 1] = tostring(x) end
  if #names > 0 then
    local v = redis.call('HMGET', H, unpack(names))
    for i = 1, #names do
      if v[i] then return tonumber(names[i]) end
    end
  end
  for d = 1, 4 do
    if s[C + d] > 0 then return s[CUR] end
  end
  return nil
end
"""

_CLOSE = """
local function correct(s, amounts, at, delta)  -- amounts[at + d] += delta; s's sums follow
  for d = 1, 4 do
    local old = amounts[at + d]
    local new = max(old + delta[d], 0)  -- a slice never goes below zero
    amounts[at + d], s[U + d] = new, s[U + d] + new - old
  end
end
-- Leases closed: their slice (second `slot`) corrected by `delta` (requests: 0 settle, -1
-- release; input and output tokens: real minus estimate; summed over `closes` leases),
-- unless it left the window; that many requests fewer in flight; the provider's remaining
-- figures follow. Within the current second that is S alone; an older second adds an HGET
-- and an HSET (or HDEL) of H.
local function close(s, H, slot, requests, input, output, closes)
  local delta = {requests, input, output, input + output}
  if slot >= sec - 60 and slot >= s[T] then
    if slot == s[CUR] then
      correct(s, s, C, delta)
    elseif slot < s[CUR] then
      local name = tostring(slot)
      local raw = redis.call('HGET', H, name)
      if raw then
        local a = {struct.unpack(SLICE, raw)}
        correct(s, a, 0, delta)
        if a[1] > 0 or a[2] > 0 or a[3] > 0 or a[4] > 0 then
          redis.call('HSET', H, name, struct.pack(SLICE, a[1], a[2], a[3], a[4]))
        else
          redis.call('HDEL', H, name)
        end
      end
    end
  end
  s[INFLIGHT] = max(0, s[INFLIGHT] - closes)
  for d = 1, 4 do
    if delta[d] ~= 0 and s[REM + d] >= 0 and s[RST + d] > now_ms then
      s[REM + d] = max(0, s[REM + d] - delta[d])
    end
  end
end
"""

#: KEYS: S1, H1, S2, H2, ...  Numbers: input, output, the requests wanted ahead (see
#: redis_grants), per key rpm, input_tpm, output_tpm, then the number of corrections to book
#: first and for each its key index, booked second, request, input and output deltas and
#: leases closed (as CLOSE's), then the time (as in every script: -1 for the server's).
#: -> {key index (1-based), booked second, requests granted, ms left in that second} or
#: {0, ms until room may appear}
#: On a one-key pool a booking is one GET and one SET, plus an HSET and a PEXPIRE of the
#: history when it opens a new second.
ACQUIRE = (
    _NOW
    + _STATE
    + _WINDOW
    + _CLOSE
    + """
local input, output, want = A[1], A[2], A[3]
local need = {1, input, output, input + output}
local best, best_room, best_flight, wait_ms = 0, -1, 0, 60000
local states, moved, missing = {}, {}, {}
for k = 1, #KEYS / 2 do
  local s
  s, missing[k] = load(KEYS[2 * k - 1], KEYS[2 * k])
  states[k], moved[k] = s, advance(s, KEYS[2 * k])
end
local at = 3 * #KEYS / 2 + 4  -- the corrections this booking carries
for i = at + 1, at + 6 * A[at], 6 do
  local k = A[i]
  close(states[k], KEYS[2 * k], A[i + 1], A[i + 2], A[i + 3], A[i + 4], A[i + 5])
  moved[k] = true
end
local cfgs = {}
for k = 1, #KEYS / 2 do
  local s, H = states[k], KEYS[2 * k]
  local cfg = {A[3 * k + 1], A[3 * k + 2], A[3 * k + 3], -1}
  cfgs[k] = cfg
  local fits, room, ready, oldest = true, 1.0, now_ms, nil
  if s[BLOCKED] > now_ms then fits = false; ready = s[BLOCKED] end
  for d = 1, 4 do
    local lim, n = effective(s, cfg[d], d), need[d]
    if lim >= 0 then
      if n > lim then n = lim end  -- larger than a whole limit: wait for an empty window
      local left = lim - s[U + d] - n
      if left < 0 then
        fits = false
        oldest = oldest or first(s, H) or sec
        ready = max(ready, (oldest + 61) * 1000)
      elseif lim > 0 then
        room = min(room, left / lim)
      end
    end
    if s[REM + d] >= 0 and s[RST + d] > now_ms and n > s[REM + d] then
      fits = false
      ready = max(ready, s[RST + d])
    end
  end
  if fits then
    if room > best_room or (room == best_room and s[INFLIGHT] < best_flight) then
      best, best_room, best_flight = k, room, s[INFLIGHT]
    end
  elseif ready - now_ms < wait_ms then
    wait_ms = ready - now_ms
  end
end
for k = 1, #KEYS / 2 do  -- keep the other keys' moved windows and closed leases
  if moved[k] and k ~= best then save(KEYS[2 * k - 1], states[k], missing[k]) end
end
if best == 0 then return {0, max(wait_ms, 1)} end
local S, H, s, renew = KEYS[2 * best - 1], KEYS[2 * best], states[best], missing[best]
local g = want  -- requests booked: at most a quarter of any room left after this one
for d = 1, 4 do
  local lim = effective(s, cfgs[best][d], d)
  if lim >= 0 and need[d] > 0 then g = min(g, floor((lim - s[U + d]) / need[d] / 4)) end
  if s[REM + d] >= 0 and s[RST + d] > now_ms and need[d] > 0 then
    g = min(g, floor(s[REM + d] / need[d] / 4))
  end
end
g = max(g, 1)
if s[CUR] ~= sec then
  renew = true  -- a new second: the current slice joins the history
  if s[C + 1] > 0 or s[C + 2] > 0 or s[C + 3] > 0 or s[C + 4] > 0 then
    redis.call('HSET', H, tostring(s[CUR]),
               struct.pack(SLICE, s[C + 1], s[C + 2], s[C + 3], s[C + 4]))
    redis.call('PEXPIRE', H, '180000')  -- outlives the window and the idle reset's 121 s
  end
  for d = 1, 4 do s[C + d] = 0 end
  s[CUR] = sec
end
for d = 1, 4 do
  local n = g * need[d]
  s[C + d], s[U + d] = s[C + d] + n, s[U + d] + n
  if s[REM + d] >= 0 and s[RST + d] > now_ms then
    s[REM + d] = max(0, s[REM + d] - n)
  end
end
s[INFLIGHT] = s[INFLIGHT] + g
save(S, s, renew)
return {best, sec, g, (sec + 1) * 1000 - now_ms}
"""
)

#: KEYS: S, H.  Numbers: the number of corrections, for each its booked second, request delta
#: (0 settle, -1 release), input and output deltas (real minus estimate) and the leases it
#: closes, then the time. What a replica owes that no booking of its own carried
#: (redis_grants.Owed).
CLOSE = (
    _NOW
    + _STATE
    + _CLOSE
    + """
local s, missing = load(KEYS[1], KEYS[2])
for i = 2, 1 + 5 * A[1], 5 do
  close(s, KEYS[2], A[i], A[i + 1], A[i + 2], A[i + 3], A[i + 4])
end
save(KEYS[1], s, missing)
return 1
"""
)

#: KEYS: S, H.  Numbers: limit/remaining x 4 dims (-1 absent), request reset ms, token reset
#: ms, retry-after ms, the time.
OBSERVE = (
    _NOW
    + _STATE
    + """
local s = load(KEYS[1], KEYS[2])
for d = 1, 4 do
  local lim, rem = A[2 * d - 1], A[2 * d]
  if lim > 0 then s[LIM + d] = lim end
  if rem >= 0 then
    s[REM + d] = rem
    s[RST + d] = now_ms + (d == 1 and A[9] or A[10])
  end
end
local retry = A[11]
if retry > 0 and now_ms + retry > s[BLOCKED] then s[BLOCKED] = now_ms + retry end
save(KEYS[1], s, true)
return 1
"""
)

#: KEYS: S, H.  Numbers: rpm, input_tpm, output_tpm, the time.
#: -> {limit, remaining, used} x 4 dims, inflight, ms still blocked
STATUS = (
    _NOW
    + _STATE
    + _WINDOW
    + """
local s, missing = load(KEYS[1], KEYS[2])
if advance(s, KEYS[2]) then save(KEYS[1], s, missing) end
local cfg = {A[1], A[2], A[3], -1}
local out = {}
for d = 1, 4 do
  local lim = effective(s, cfg[d], d)
  local remaining = -1
  if lim >= 0 then remaining = max(0, lim - s[U + d]) end
  local rem, rst = s[REM + d], s[RST + d]
  if rem >= 0 and rst > now_ms and (remaining < 0 or rem < remaining) then remaining = rem end
  table.insert(out, lim); table.insert(out, remaining); table.insert(out, s[U + d])
end
table.insert(out, s[INFLIGHT])
table.insert(out, max(0, s[BLOCKED] - now_ms))
return out
"""
)

"""The Lua scripts of the Redis engine: each step that must not be seen half done.

Redis runs a script whole, with nothing in between, so each of these is one
atomic step on the server:

* `PUBLISH_JOB`: a job enters its lane once per job id (a retried publish
  finds the id's marker and adds nothing), and idle workers hear the bell.
* `FETCH`: the one call a worker makes to take jobs: due retries move from
  the delayed set into their lanes; entries whose holder stopped answering
  for longer than the lease are claimed (`XAUTOCLAIM`: two workers reclaiming
  at once never both get one entry); each key lane gives at most one job at
  a time (its entry stays pending until acked, and a dead holder loses it
  once the lease runs out); then the high, key, normal and low lanes are read.
* `ACK`, `EXTEND`, `NAK`: only the entry's holder may settle or extend it
  (a worker that lost its lease can no longer take the job back from the
  one that reclaimed it). An acked entry is deleted: streams do not grow.
* `CREATE_OUTCOME`: a terminal record is written once, with its TTL, and
  published to the submitting process in the same step; `FINISH` does that
  and the ack in one call (a job's usual end: one round trip, not two).
* `DEAD_LETTER`, `REQUEUE`: a dead letter is written once per job message,
  and requeued at most once (a letter already gone requeues nothing).
* `LANES`: what each lane holds (waiting, running, delayed), as one snapshot.
* `PUT_STATUS`, `STATUSES`, `DROP_STATUS`: the workers' statuses, keys with
  a TTL found through a sorted set of worker names scored by expiry (so
  that nothing scans the keyspace); expired names leave the set whenever it
  is read or written.
* `PRUNE`: consumers that hold nothing and have not read for a long time
  (workers that were killed, after their entries were reclaimed) leave the
  group.

Entries carry the fields `d` (the payload), `c` (its codec), `i` (the job
id) and `p` (deliveries before this entry: a retry is a new entry, and its
count goes on from there). A delivery's attempt is `p` plus the pending
list's delivery count.
"""

from __future__ import annotations

from typing import Final

__all__ = (
    "ACK",
    "CREATE_OUTCOME",
    "DEAD_LETTER",
    "EXTEND",
    "FETCH",
    "FINISH",
    "NAK",
    "PRUNE",
    "PUBLISH_JOB",
    "REQUEUE",
)

# Shared by the scripts that read an entry's fields: a flat reply
# {k1, v1, k2, v2, ...} as a table.
_FIELDS: Final = """
local function fields(flat)
  local t = {}
  if flat then
    for j = 1, #flat, 2 do t[flat[j]] = flat[j + 1] end
  end
  return t
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function holder(lane, group, id)
  local p = redis.call('XPENDING', lane, group, id, id, 1)
  if #p == 0 then return nil, 0 end
  return p[1][2], tonumber(p[1][4])
end
"""

PUBLISH_JOB: Final = """
-- KEYS: lane, marker, the set of key lanes with jobs.
-- ARGV: payload, codec, job id, bell channel, marker ttl (s), keyed (0/1)
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[5]) then return 0 end
redis.call('XADD', KEYS[1], '*', 'd', ARGV[1], 'c', ARGV[2], 'i', ARGV[3])
if ARGV[6] == '1' then redis.call('SADD', KEYS[3], KEYS[1]) end
-- The bell rings when the lane had nothing waiting: every idle worker
-- looks then, and a look after this one finds this job too. While jobs
-- wait, the workers are busy and fetch as soon as they have room.
local waiting = redis.call('XLEN', KEYS[1]) - redis.call('XPENDING', KEYS[1], 'workers')[1]
if waiting <= 1 then redis.call('PUBLISH', ARGV[4], '1') end
return 1
"""

FETCH: Final = (
    _FIELDS
    + """
-- KEYS: delayed, parked, the set of key lanes with jobs, then the lanes
--       in the order they are read: high, key lanes..., normal, low.
-- ARGV: group, consumer, most, lease (ms), reclaim (0/1), bell channel,
--       where to start in the key lanes with jobs (turn by turn, so that
--       none waits for ever behind others when room is short).
-- Returns {lane index (into the lanes, from 1), entry id, delivery count,
--          payload, codec, job id, prior deliveries} per job, flattened.
local group, me, most = ARGV[1], ARGV[2], tonumber(ARGV[3])
local lease, reclaim, bell = tonumber(ARGV[4]), ARGV[5] == '1', ARGV[6]
local turn = tonumber(ARGV[7])
local delayed, parked, busy = KEYS[1], KEYS[2], KEYS[3]
local lanes = {}
for j = 4, #KEYS do lanes[#lanes + 1] = KEYS[j] end
local index = {}
for j, lane in ipairs(lanes) do index[lane] = j end
local now = now_ms()
local out = {}
local taken = 0

local function take(j, id, count, flat)
  local f = fields(flat)
  out[#out + 1] = j
  out[#out + 1] = id
  out[#out + 1] = count
  out[#out + 1] = f['d'] or ''
  out[#out + 1] = f['c'] or ''
  out[#out + 1] = f['i'] or ''
  out[#out + 1] = tonumber(f['p'] or '0')
  taken = taken + 1
end

-- Retries whose delay is over go back to the end of their lane.
local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, 256)
for _, member in ipairs(due) do
  local r = cmsgpack.unpack(member)
  if index[r[1]] then
    redis.call('XADD', r[1], '*', 'd', r[2], 'c', r[3], 'i', r[4], 'p', r[5])
  end
  redis.call('ZREM', delayed, member)
end
if #due > most then redis.call('PUBLISH', bell, '1') end

local high, normal, low = lanes[1], lanes[#lanes - 1], lanes[#lanes]

-- Entries whose holder went quiet for longer than the lease.
if reclaim then
  for _, lane in ipairs({high, normal, low}) do
    if taken >= most then break end
    local got = redis.call('XAUTOCLAIM', lane, group, me, lease, '0-0', 'COUNT', most - taken)
    for _, entry in ipairs(got[2]) do
      if entry and entry[2] then
        local _, count = holder(lane, group, entry[1])
        take(index[lane], entry[1], count, entry[2])
      elseif entry then
        redis.call('XACK', lane, group, entry[1])
      end
    end
  end
end

local function read(lane, count)
  local got = redis.call('XREADGROUP', 'GROUP', group, me, 'COUNT', count, 'STREAMS', lane, '>')
  if got then
    for _, entry in ipairs(got[1][2]) do take(index[lane], entry[1], 1, entry[2]) end
  end
end

-- A key lane: one job out at a time. Its pending entry is the lock: a
-- holder that goes quiet for longer than the lease loses it, and a job
-- handed back with a delay keeps its place (and the lock) until it is due.
local function keyed(lane)
  if redis.call('XLEN', lane) == 0 then
    redis.call('SREM', busy, lane)
    return
  end
  local p = redis.call('XPENDING', lane, group, '-', '+', 1)
  if #p == 0 then
    read(lane, 1)
    return
  end
  local id, idle = p[1][1], tonumber(p[1][3])
  local at = redis.call('HGET', parked, lane)
  if (at and now >= tonumber(at)) or ((not at) and idle >= lease) then
    redis.call('HDEL', parked, lane)
    local got = redis.call('XCLAIM', lane, group, me, 0, id)
    if got[1] and got[1][2] then
      local _, count = holder(lane, group, id)
      take(index[lane], id, count, got[1][2])
    else
      redis.call('XACK', lane, group, id)
      read(lane, 1)
    end
  end
end

if taken < most then read(high, most - taken) end
if taken < most then
  local members = redis.call('SMEMBERS', busy)
  local n = #members
  for j = 0, n - 1 do
    if taken >= most then break end
    local lane = members[(turn + j) % n + 1]
    if index[lane] then keyed(lane) end
  end
end
if taken < most then read(normal, most - taken) end
if taken < most then read(low, most - taken) end
return out
"""
)

ACK: Final = (
    _FIELDS
    + """
-- KEYS: lane.  ARGV: group, entry id, consumer, bell channel, keyed (0/1)
local who = holder(KEYS[1], ARGV[1], ARGV[2])
if who and who ~= ARGV[3] then return 0 end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if ARGV[5] == '1' and redis.call('XLEN', KEYS[1]) > 0 then
  redis.call('PUBLISH', ARGV[4], '1')
end
return 1
"""
)

FINISH: Final = (
    _FIELDS
    + """
-- KEYS: lane, record.
-- ARGV: group, entry id, consumer, bell channel, keyed (0/1),
--       record ('' for none), ttl (s), channel, job id
-- Returns {written (0/1), acked (0/1)}.
local written = 0
if ARGV[6] ~= '' and redis.call('SET', KEYS[2], ARGV[6], 'NX', 'EX', ARGV[7]) then
  redis.call('PUBLISH', ARGV[8], ARGV[9] .. ' ' .. ARGV[6])
  written = 1
end
local who = holder(KEYS[1], ARGV[1], ARGV[2])
if who and who ~= ARGV[3] then return {written, 0} end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if ARGV[5] == '1' and redis.call('XLEN', KEYS[1]) > 0 then
  redis.call('PUBLISH', ARGV[4], '1')
end
return {written, 1}
"""
)

EXTEND: Final = (
    _FIELDS
    + """
-- KEYS: lane.  ARGV: group, entry id, consumer
-- Claiming one's own entry again restarts its idle time (JUSTID: the
-- delivery count stays).
local who = holder(KEYS[1], ARGV[1], ARGV[2])
if who ~= ARGV[3] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'JUSTID')
return 1
"""
)

NAK: Final = (
    _FIELDS
    + """
-- KEYS: lane, delayed, parked.
-- ARGV: group, entry id, consumer, delay (ms), keyed (0/1), bell channel
local lane, group, id, me = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local delay = tonumber(ARGV[4])
local who, count = holder(lane, group, id)
if who ~= me then return 0 end
if ARGV[5] == '1' then
  -- A key lane: the entry keeps its place and the lane's lock; it is
  -- delivered again (to anyone) once due.
  redis.call('XCLAIM', lane, group, me, 0, id, 'JUSTID')
  redis.call('HSET', KEYS[3], lane, now_ms() + delay)
  if delay <= 0 then redis.call('PUBLISH', ARGV[6], '1') end
  return 1
end
local entry = redis.call('XRANGE', lane, id, id)
redis.call('XACK', lane, group, id)
redis.call('XDEL', lane, id)
if #entry == 0 then return 0 end
local f = fields(entry[1][2])
local prior = tonumber(f['p'] or '0') + count
if delay <= 0 then
  redis.call('XADD', lane, '*', 'd', f['d'], 'c', f['c'] or '', 'i', f['i'] or '', 'p', prior)
  redis.call('PUBLISH', ARGV[6], '1')
else
  local member = cmsgpack.pack({lane, f['d'], f['c'] or '', f['i'] or '', prior, id})
  redis.call('ZADD', KEYS[2], now_ms() + delay, member)
end
return 1
"""
)

CREATE_OUTCOME: Final = """
-- KEYS: record.  ARGV: record, ttl (s), channel, job id
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return 0 end
redis.call('PUBLISH', ARGV[3], ARGV[4] .. ' ' .. ARGV[1])
return 1
"""

DEAD_LETTER: Final = """
-- KEYS: dead stream, marker.  ARGV: letter (JSON), marker ttl (s)
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[2]) then return 0 end
redis.call('XADD', KEYS[1], '*', 'letter', ARGV[1])
return 1
"""

REQUEUE: Final = """
-- KEYS: lane, dead stream, record, the set of key lanes with jobs.
-- ARGV: dead letter's entry id, payload, codec, job id, bell channel, keyed (0/1)
-- Returns 0 (and does nothing) if the dead letter is gone: deleted, or
-- requeued already (by another caller that listed it too).
if redis.call('XDEL', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('DEL', KEYS[3])
redis.call('XADD', KEYS[1], '*', 'd', ARGV[2], 'c', ARGV[3], 'i', ARGV[4])
if ARGV[6] == '1' then redis.call('SADD', KEYS[4], KEYS[1]) end
redis.call('PUBLISH', ARGV[5], '1')
return 1
"""

LANES: Final = """
-- KEYS: delayed, parked, then the lanes (streams).  ARGV: group
-- Returns {waiting, running, delayed} per lane, flattened, in KEYS' order.
-- A lane's stream holds what waits and what is pending (an acked entry is
-- deleted); a retry waiting out its backoff is in the delayed set, or, on
-- a key lane, a pending entry that is parked.
local delayed_in = {}
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local lane = cmsgpack.unpack(member)[1]
  delayed_in[lane] = (delayed_in[lane] or 0) + 1
end
local out = {}
for j = 3, #KEYS do
  local lane = KEYS[j]
  local held = redis.call('XPENDING', lane, ARGV[1])[1]
  local parked = redis.call('HEXISTS', KEYS[2], lane)
  out[#out + 1] = math.max(0, redis.call('XLEN', lane) - held)
  out[#out + 1] = math.max(0, held - parked)
  out[#out + 1] = (delayed_in[lane] or 0) + math.min(parked, held)
end
return out
"""

PUT_STATUS: Final = (
    _FIELDS
    + """
-- KEYS: the worker's status, the set of workers scored by expiry (ms).
-- ARGV: worker, status, ttl (ms)
local now, ttl = now_ms(), tonumber(ARGV[3])
redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
redis.call('ZADD', KEYS[2], now + ttl, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
-- The set goes when its last status does (a cluster that went away).
local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[2], last[2])
return 1
"""
)

STATUSES: Final = (
    _FIELDS
    + """
-- KEYS: the set of workers scored by expiry.  Returns the workers whose
-- status has not expired (their keys expire by the same clock, the server's).
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms())
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""
)

DROP_STATUS: Final = """
-- KEYS: the worker's status, the set of workers.  ARGV: worker
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""

PRUNE: Final = """
-- KEYS: the lanes.  ARGV: group, idle (ms) after which a consumer holding
-- nothing is removed.  Returns how many were removed.
local removed = 0
for _, lane in ipairs(KEYS) do
  for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', lane, ARGV[1])) do
    local f = {}
    for j = 1, #c, 2 do f[c[j]] = c[j + 1] end
    if tonumber(f['pending']) == 0 and tonumber(f['idle']) > tonumber(ARGV[2]) then
      redis.call('XGROUP', 'DELCONSUMER', lane, ARGV[1], f['name'])
      removed = removed + 1
    end
  end
end
return removed
"""

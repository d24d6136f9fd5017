-- Remove jobs of retired classes (conveyor.maintenance.remove_jobs): each entry is removed by
-- its exact stored bytes, so an entry that changed or moved since the caller read it (taken by
-- a worker, promoted, retried) is left alone. The caller matched the class on those bytes, so
-- the same bytes cannot name another class.
--
-- Lists: LREM per entry would scan the list once per entry (seconds of blocking on a long
-- queue), so each entry is looked up at the index where it was read (shifted by what producers
-- pushed since, found within a small window), overwritten with a tombstone, and one LREM from
-- the nearer end removes the tombstones. An entry not found near its index is left for the
-- next run.
--
-- KEYS[1]  the list (queue, deferred list, working list) or sorted set holding the entries
-- KEYS[2]  optional: the liveness key of the working list's owner; if it exists the owner is
--          alive and nothing is removed (a live process's working list is never touched)
-- ARGV[1]  'list' or 'zset'
-- ARGV[2]  lists: a tombstone value no payload can equal
-- ARGV[3]  lists: 1 to remove the tombstones scanning from the head, -1 from the tail
-- ARGV[4..] zsets: payloads as stored; lists: pairs of (index when read, payload as stored)
--
-- Returns the number of entries removed, or -1 when the owner in KEYS[2] is alive.
if KEYS[2] and redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
if ARGV[1] == 'zset' then
  local removed = 0
  for i = 4, #ARGV do
    removed = removed + redis.call('ZREM', KEYS[1], ARGV[i])
  end
  return removed
end

local WINDOW = 64
local drift, marked = 0, 0
for i = 4, #ARGV, 2 do
  local raw = ARGV[i + 1]
  local at = tonumber(ARGV[i]) + drift
  if redis.call('LINDEX', KEYS[1], at) ~= raw then
    local from = math.max(0, at - WINDOW)
    local near = redis.call('LRANGE', KEYS[1], from, at + WINDOW)
    at = nil
    for j = 1, #near do
      if near[j] == raw then
        at = from + j - 1
        break
      end
    end
    if at then drift = at - tonumber(ARGV[i]) end
  end
  if at then
    redis.call('LSET', KEYS[1], at, ARGV[2])
    marked = marked + 1
  end
end
if marked == 0 then return 0 end
return redis.call('LREM', KEYS[1], tonumber(ARGV[3]) * marked, ARGV[2])

-- Remove jobs of retired classes (conveyor.maintenance.remove_jobs): each entry is removed by
-- its exact stored bytes, so an entry that changed or moved since the caller read it (taken by
-- a worker, promoted, retried) is left alone. The caller matched the class on those bytes, so
-- the same bytes cannot name another class.
--
-- KEYS[1]  the list (queue, deferred list, working list) or sorted set holding the entries
-- KEYS[2]  optional: the liveness key of the working list's owner; if it exists the owner is
--          alive and nothing is removed (a live process's working list is never touched)
-- ARGV[1]  'list' or 'zset'
-- ARGV[2]  for lists, LREM's count: 1 searches from the head (newest), -1 from the tail
-- ARGV[3..] payloads as stored, one per entry to remove
--
-- Returns the number of entries removed, or -1 when the owner in KEYS[2] is alive.
if KEYS[2] and redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
local removed = 0
if ARGV[1] == 'zset' then
  for i = 3, #ARGV do
    removed = removed + redis.call('ZREM', KEYS[1], ARGV[i])
  end
else
  local count = tonumber(ARGV[2])
  for i = 3, #ARGV do
    removed = removed + redis.call('LREM', KEYS[1], count, ARGV[i])
  end
end
return removed

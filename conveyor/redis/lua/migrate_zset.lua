-- Rewrite entries of a sorted set (schedule, retry, dead) in place, keeping their scores
-- (conveyor.maintenance.migrate_queue). Python prepared each new payload; an entry is replaced
-- only if it is still in the set, with the score it has now (it may have been rescheduled).
--
-- KEYS[1]  the sorted set
-- ARGV     pairs: payload as stored, payload to store instead
--
-- Returns the number of entries rewritten.
local moved = 0
for i = 1, #ARGV, 2 do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score then
    redis.call('ZREM', KEYS[1], ARGV[i])
    redis.call('ZADD', KEYS[1], score, ARGV[i + 1])
    moved = moved + 1
  end
end
return moved

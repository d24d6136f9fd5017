-- Moving a queue to another store, step 1 for a sorted set (schedule, retry, dead): take the
-- given entries, if still there, into this run's moving set with their scores, registering
-- the run, in one atomic step. An entry the poller promoted (or someone retried) meanwhile is
-- left alone: it is on the queue now, which is moved after the sets.
--
-- KEYS[1]  the sorted set
-- KEYS[2]  moving set of this run for that sorted set
-- KEYS[3]  moving registry of the queue (hash: run id -> destination JSON)
-- ARGV[1]  run id
-- ARGV[2]  destination JSON
-- ARGV[3..] the entries, exact bytes as read
--
-- Returns a flat list: entry, score, entry, score... for the entries taken.
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
local taken = {}
for i = 3, #ARGV do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score then
    redis.call('ZREM', KEYS[1], ARGV[i])
    redis.call('ZADD', KEYS[2], score, ARGV[i])
    taken[#taken + 1] = ARGV[i]
    taken[#taken + 1] = score
  end
end
return taken

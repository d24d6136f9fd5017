-- Moving a queue to another store, step 1 for a list the jobs wait in outside the queue (a
-- concurrency-limited class's deferred jobs): take the given entries, if still there, into
-- this run's moving list, registering the run, in one atomic step. An entry resumed onto the
-- queue meanwhile is left alone: it is on the queue now, which is moved after this.
--
-- KEYS[1]  the list (oldest at the right end)
-- KEYS[2]  moving list of this run (oldest at the right end, as step 1 for the queue leaves it)
-- KEYS[3]  moving registry of the queue (hash: run id -> destination JSON)
-- ARGV[1]  run id
-- ARGV[2]  destination JSON
-- ARGV[3..] the entries, oldest first, exact bytes as read
--
-- Returns the entries taken, oldest first.
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
local taken = {}
for i = 3, #ARGV do
  if redis.call('LREM', KEYS[1], -1, ARGV[i]) > 0 then
    redis.call('LPUSH', KEYS[2], ARGV[i])
    taken[#taken + 1] = ARGV[i]
  end
end
return taken

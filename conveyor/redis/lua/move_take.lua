-- Moving a queue to another store, step 1: take up to N jobs off the consuming end of the
-- queue into this run's moving list, registering the run, in one atomic step. The caller then
-- pushes them to the other store and only after that deletes the moving list, so a job is
-- always on the queue, in a moving list or in the other store: a rerun pushes what an
-- interrupted run left in its moving list (at least once, never lost).
--
-- KEYS[1]  queue list
-- KEYS[2]  moving list of this run
-- KEYS[3]  moving registry of the queue (hash: run id -> destination JSON)
-- ARGV[1]  N, how many jobs to take at most
-- ARGV[2]  run id
-- ARGV[3]  destination JSON
--
-- Returns the jobs taken, oldest first.
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
local taken = {}
for _ = 1, tonumber(ARGV[1]) do
  local raw = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
  if not raw then break end
  taken[#taken + 1] = raw
end
return taken

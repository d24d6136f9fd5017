-- Recover the working list of a dead process. The caller read the list and prepared each job
-- (interrupted_count + 1); this script re-checks that the owner is still dead, then moves every
-- job that is still there, so two processes recovering the same list never duplicate a job.
--
-- KEYS[1]     liveness key of the owner (must not exist)
-- KEYS[2]     owner's working list
-- KEYS[3]     working registry (set of identities)
-- KEYS[4]     interrupted (zset)
-- KEYS[5]     queues (set of queue names)
-- KEYS[6..n]  queue lists
-- ARGV[1]     owner identity        ARGV[2] now (score for interrupted)
-- ARGV[3]     interrupted max size  ARGV[4] interrupted cutoff score
-- ARGV[5..]   groups of 4: payload as found, destination (0 = interrupted, else KEYS index),
--             new payload, queue name; newest first (as LRANGE returns the working list), so
--             after the RPUSHes the oldest job is the next one taken
--
-- Returns {moved, parked}, or {-1, 0} when the owner is alive after all.
if redis.call('EXISTS', KEYS[1]) == 1 then return {-1, 0} end
local moved, parked = 0, 0
for i = 5, #ARGV, 4 do
  if redis.call('LREM', KEYS[2], -1, ARGV[i]) > 0 then
    local dest = tonumber(ARGV[i + 1])
    if dest == 0 then
      redis.call('ZADD', KEYS[4], ARGV[2], ARGV[i + 2])
      parked = parked + 1
    else
      redis.call('RPUSH', KEYS[dest], ARGV[i + 2])
      redis.call('SADD', KEYS[5], ARGV[i + 3])
      moved = moved + 1
    end
  end
end
if parked > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. ARGV[4])
  redis.call('ZREMRANGEBYRANK', KEYS[4], 0, -(tonumber(ARGV[3]) + 1))
end
if redis.call('LLEN', KEYS[2]) == 0 then
  redis.call('SREM', KEYS[3], ARGV[1])
end
return {moved, parked}

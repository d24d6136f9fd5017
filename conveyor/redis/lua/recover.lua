-- Recover the working list of a dead process. The caller read the list and its start
-- boundary and prepared each job (interrupted_count + 1 only for jobs it had started); this
-- script re-checks that the owner is still dead, then moves every job that is still there, so
-- two processes recovering the same list never duplicate a job.
--
-- KEYS[1]     liveness key of the owner (must not exist)
-- KEYS[2]     owner's working list
-- KEYS[3]     working registry (set of identities)
-- KEYS[4]     interrupted (zset)
-- KEYS[5]     queues (set of queue names)
-- KEYS[6]     owner's start boundary
-- KEYS[7]     trimmed-from-interrupted counter
-- KEYS[8]     dead (zset): payloads that are not jobs go there, with the reason
-- KEYS[9..n]  queue lists
-- ARGV[1]     owner identity        ARGV[2] now (score for interrupted)
-- ARGV[3]     interrupted max size  ARGV[4] interrupted cutoff score
-- ARGV[5..]   groups of 4: payload as found, destination (0 = interrupted, -1 = dead, else
--             KEYS index),
--             new payload, queue name; newest first (as LRANGE returns the working list), so
--             after the RPUSHes the oldest job is the next one taken
--
-- Returns {moved, parked, entries trimmed from interrupted, their jids (at most 100)...}, or
-- {-1, 0, 0} when the owner is alive after all.
if redis.call('EXISTS', KEYS[1]) == 1 then return {-1, 0, 0} end
local moved, parked = 0, 0
for i = 5, #ARGV, 4 do
  if redis.call('LREM', KEYS[2], -1, ARGV[i]) > 0 then
    local dest = tonumber(ARGV[i + 1])
    if dest == 0 then
      redis.call('ZADD', KEYS[4], ARGV[2], ARGV[i + 2])
      parked = parked + 1
    elseif dest == -1 then
      redis.call('ZADD', KEYS[8], ARGV[2], ARGV[i + 2])
    else
      redis.call('RPUSH', KEYS[dest], ARGV[i + 2])
      redis.call('SADD', KEYS[5], ARGV[i + 3])
      moved = moved + 1
    end
  end
end
local out = {moved, parked, 0}
if parked > 0 then
  local gone = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', '(' .. ARGV[4], 'LIMIT', 0, 100)
  local n = redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. ARGV[4])
  local over = redis.call('ZCARD', KEYS[4]) - tonumber(ARGV[3])
  if over > 0 then
    for _, m in ipairs(redis.call('ZRANGE', KEYS[4], 0, math.min(over, 100) - 1)) do
      gone[#gone + 1] = m
    end
    n = n + redis.call('ZREMRANGEBYRANK', KEYS[4], 0, over - 1)
  end
  if n > 0 then
    redis.call('INCRBY', KEYS[7], n)
    out[3] = n
    for j = 1, math.min(#gone, 100) do
      out[#out + 1] = string.match(gone[j], '"jid":"([%w_-]+)"') or '?'
    end
  end
end
if redis.call('LLEN', KEYS[2]) == 0 then
  redis.call('SREM', KEYS[3], ARGV[1])
  redis.call('DEL', KEYS[6])
end
return out

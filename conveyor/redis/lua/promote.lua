-- Promote jobs from a sorted set (schedule or retry when due; any set for retry-all) to their
-- queues. The pop and the push
-- happen in this one script, so a crash can neither lose nor duplicate a job, and competing
-- pollers promote each job once (only the caller whose ZREM succeeds pushes it).
--
-- KEYS[1]     the source sorted set (schedule, retry, dead or interrupted)
-- KEYS[2]     queues (set of queue names)
-- KEYS[3..n]  queue lists
-- ARGV        groups of 4: payload as stored, index into KEYS of its queue list,
--             payload to push (enqueued_at set), queue name
--
-- Returns the number of jobs promoted.
local moved = 0
for i = 1, #ARGV, 4 do
  if redis.call('ZREM', KEYS[1], ARGV[i]) > 0 then
    redis.call('LPUSH', KEYS[tonumber(ARGV[i + 1])], ARGV[i + 2])
    redis.call('SADD', KEYS[2], ARGV[i + 3])
    moved = moved + 1
  end
end
return moved

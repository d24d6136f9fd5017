-- Move one job from a sorted set (retry, dead, interrupted, schedule) onto its queue now.
--
-- KEYS[1]  source zset   KEYS[2]  queues (set)   KEYS[3]  queue list
-- ARGV[1]  payload as stored   ARGV[2]  payload to push   ARGV[3]  queue name
--
-- Returns 1 if moved, 0 if the job was no longer in the set.
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('LPUSH', KEYS[3], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
return 1

-- Add a payload to a capped sorted set (dead, interrupted) and trim it by age and size,
-- optionally taking it out of a working list or sorted set in the same step.
--
-- KEYS[1]  capped zset              KEYS[2]  source key, or the zset itself when there is none
-- ARGV[1]  score                    ARGV[2]  payload to add
-- ARGV[3]  maximum size             ARGV[4]  cutoff score (entries scored below are dropped)
-- ARGV[5]  source kind: 'none', 'list' or 'zset'
-- ARGV[6]  payload to remove from the source
--
-- Returns 1 if the payload was added, 0 if the source no longer held it.
if ARGV[5] == 'list' then
  if redis.call('LREM', KEYS[2], -1, ARGV[6]) == 0 then return 0 end
elseif ARGV[5] == 'zset' then
  if redis.call('ZREM', KEYS[2], ARGV[6]) == 0 then return 0 end
end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[4])
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(tonumber(ARGV[3]) + 1))
return 1

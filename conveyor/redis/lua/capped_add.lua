-- Add a payload to a capped sorted set (dead, interrupted) and trim it by age and size,
-- optionally taking it out of a working list or sorted set in the same step. Trimmed entries
-- are counted (so /metrics can show that the set overflowed) and named by their jids.
--
-- KEYS[1]  capped zset              KEYS[2]  source key, or the zset itself when there is none
-- KEYS[3]  trimmed counter of the capped zset
-- ARGV[1]  score                    ARGV[2]  payload to add
-- ARGV[3]  maximum size             ARGV[4]  cutoff score (entries scored below are dropped)
-- ARGV[5]  source kind: 'none', 'list' or 'zset'
-- ARGV[6]  payload to remove from the source
--
-- Returns {1 if the payload was added (0 if the source no longer held it), entries trimmed,
-- jid of each trimmed entry (at most 100)...}.
if ARGV[5] == 'list' then
  if redis.call('LREM', KEYS[2], -1, ARGV[6]) == 0 then return {0, 0} end
elseif ARGV[5] == 'zset' then
  if redis.call('ZREM', KEYS[2], ARGV[6]) == 0 then return {0, 0} end
end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[4], 'LIMIT', 0, 100)
local n = redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[4])
local over = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[3])
if over > 0 then
  for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, math.min(over, 100) - 1)) do
    gone[#gone + 1] = m
  end
  n = n + redis.call('ZREMRANGEBYRANK', KEYS[1], 0, over - 1)
end
local out = {1, n}
if n > 0 then
  redis.call('INCRBY', KEYS[3], n)
  for j = 1, math.min(#gone, 100) do
    out[#out + 1] = string.match(gone[j], '"jid":"([%w_-]+)"') or '?'
  end
end
return out

-- Finish a batch of executed jobs: take each out of the working list and, in the same step,
-- record where it goes next (nowhere, the retry set or the dead set), then count it.
-- A job missing from the working list was already recovered by another process (this one
-- was taken for dead); it is not added again, so recovery never duplicates a retry.
--
-- KEYS[1]  working list             KEYS[2]  retry (zset)        KEYS[3]  dead (zset)
-- KEYS[4]  stat:processed           KEYS[5]  stat:processed:<day>
-- KEYS[6]  stat:failed              KEYS[7]  stat:failed:<day>
-- ARGV[1]  TTL of the daily stat keys (seconds)
-- ARGV[2]  dead set maximum size    ARGV[3]  dead set cutoff score (older entries are dropped)
-- ARGV[4..] groups of 4: kind, payload as fetched, score, new payload
--           kind: 'ok' (succeeded), 'fail' (failed, not kept), 'retry', 'dead',
--           'gone' (a middleware already moved it elsewhere: not counted)
--
-- Returns the number of jobs that were still in the working list.
local processed, failed, found, to_dead = 0, 0, 0, false
for i = 4, #ARGV, 4 do
  local kind = ARGV[i]
  if kind ~= 'gone' then processed = processed + 1 end
  if kind ~= 'ok' and kind ~= 'gone' then failed = failed + 1 end
  if redis.call('LREM', KEYS[1], -1, ARGV[i + 1]) > 0 then
    found = found + 1
    if kind == 'retry' then
      redis.call('ZADD', KEYS[2], ARGV[i + 2], ARGV[i + 3])
    elseif kind == 'dead' then
      redis.call('ZADD', KEYS[3], ARGV[i + 2], ARGV[i + 3])
      to_dead = true
    end
  end
end
if to_dead then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[3])
  redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -(tonumber(ARGV[2]) + 1))
end
if processed > 0 then
  redis.call('INCRBY', KEYS[4], processed)
  redis.call('INCRBY', KEYS[5], processed)
  redis.call('EXPIRE', KEYS[5], ARGV[1])
end
if failed > 0 then
  redis.call('INCRBY', KEYS[6], failed)
  redis.call('INCRBY', KEYS[7], failed)
  redis.call('EXPIRE', KEYS[7], ARGV[1])
end
return found

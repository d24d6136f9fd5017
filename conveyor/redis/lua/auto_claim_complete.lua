-- Automation (SPEC AUTO-5): the master claims a run's complete step, so it runs once per run
-- however many masters come and go. A claim made under an older fence whose master never
-- finished (it died during the step) is taken over by the newer master.
--
-- KEYS[1]  conveyor:automation:run:{id}            (hash)
-- KEYS[2]  conveyor:automation:fence:{workflow}    (highest fence seen)
-- KEYS[3]  conveyor:automation:rejected:{workflow} (count of rejected stale writes)
-- ARGV[1]  fence   ARGV[2] now (epoch seconds)
--
-- Returns {outcome, state}: 'claimed', 'taken-over' (claimed from an older fence), 'held'
-- (claimed before under this fence), 'state' (not every task has ended yet, or finished),
-- 'missing', or 'stale' (fence below the highest seen or not the run's; counted).
local high = tonumber(redis.call('GET', KEYS[2]) or '0')
local fence = tonumber(ARGV[1])
if fence < high then
  redis.call('INCR', KEYS[3])
  return {'stale', ''}
end
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing', ''} end
local v = redis.call('HMGET', KEYS[1], 'state', 'fence', 'complete_fence')
if tonumber(v[2] or '0') ~= fence then
  redis.call('INCR', KEYS[3])
  return {'stale', v[1]}
end
if v[1] ~= 'completing' then return {'state', v[1]} end
if v[3] then
  if tonumber(v[3]) == fence then return {'held', v[1]} end
  redis.call('HSET', KEYS[1], 'complete_fence', ARGV[1], 'complete_claimed_at', ARGV[2])
  redis.call('HINCRBY', KEYS[1], 'complete_claims', 1)
  return {'taken-over', v[1]}
end
redis.call('HSET', KEYS[1], 'complete_fence', ARGV[1], 'complete_claimed_at', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'complete_claims', 1)
return {'claimed', v[1]}

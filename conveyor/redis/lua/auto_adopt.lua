-- Automation (SPEC AUTO-9): a master takes charge of an unfinished run under its term. Every
-- later master action on the run must carry this fence; a master with an older fence is stale.
--
-- KEYS[1]  conveyor:automation:run:{id}             (hash)
-- KEYS[2]  conveyor:automation:fence:{workflow}     (highest fence seen)
-- KEYS[3]  conveyor:automation:rejected:{workflow}  (count of rejected stale writes)
-- ARGV[1]  fence   ARGV[2] master node id
--
-- Returns {outcome, state}: outcome 'adopted', 'mine' (already adopted with this fence),
-- 'missing', or 'stale' (fence below the highest seen or the run's; counted in KEYS[3]).
local high = tonumber(redis.call('GET', KEYS[2]) or '0')
local fence = tonumber(ARGV[1])
if fence < high then
  redis.call('INCR', KEYS[3])
  return {'stale', ''}
end
if fence > high then redis.call('SET', KEYS[2], ARGV[1]) end
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing', ''} end
local v = redis.call('HMGET', KEYS[1], 'state', 'fence')
local current = tonumber(v[2] or '0')
if current == fence then return {'mine', v[1]} end
if current > fence then
  redis.call('INCR', KEYS[3])
  return {'stale', v[1]}
end
redis.call('HSET', KEYS[1], 'fence', ARGV[1], 'master', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'adoptions', 1)
return {'adopted', v[1]}

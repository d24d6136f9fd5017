-- Automation (SPEC AUTO-5): the master ends a run: 'done', or 'failed' with an error. Allowed
-- from 'preparing' (a prepare that failed) to the master that adopted the run, and from
-- 'completing' only to the master holding the complete claim.
--
-- KEYS[1]  conveyor:automation:run:{id}            (hash)
-- KEYS[2]  conveyor:automation:fence:{workflow}    (highest fence seen)
-- KEYS[3]  conveyor:automation:rejected:{workflow} (count of rejected stale writes)
-- KEYS[4]  conveyor:automation:active:{workflow}   (set of unfinished run ids)
-- KEYS[5]  conveyor:automation:run:{id}:results    KEYS[6] conveyor:automation:run:{id}:started
-- KEYS[7]  conveyor:automation:metrics:{workflow}  (runs_finished|<state> counted)
-- ARGV[1]  fence   ARGV[2] 'done' | 'failed'   ARGV[3] now   ARGV[4] summary vars (JSON)
-- ARGV[5]  error ('' for none)   ARGV[6] step result (JSON, '' for none)
-- ARGV[7]  seconds to keep the finished run
--
-- Returns {outcome, state}: 'finished', 'state' (not finishable from its state), 'missing' or
-- 'stale' (fence below the highest seen, or not the adopter/claimer; counted).
local high = tonumber(redis.call('GET', KEYS[2]) or '0')
local fence = tonumber(ARGV[1])
if fence < high then
  redis.call('INCR', KEYS[3])
  return {'stale', ''}
end
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing', ''} end
local v = redis.call('HMGET', KEYS[1], 'state', 'fence', 'complete_fence')
local owner = v[2]
if v[1] == 'completing' then owner = v[3] end
if v[1] ~= 'preparing' and v[1] ~= 'completing' then return {'state', v[1]} end
if tonumber(owner or '0') ~= fence then
  redis.call('INCR', KEYS[3])
  return {'stale', v[1]}
end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'finished_at', ARGV[3], 'summary', ARGV[4],
  'error', ARGV[5], 'complete_result', ARGV[6])
redis.call('SREM', KEYS[4], redis.call('HGET', KEYS[1], 'id'))
local keep = tonumber(ARGV[7])
redis.call('EXPIRE', KEYS[1], keep)
redis.call('EXPIRE', KEYS[5], keep)
redis.call('EXPIRE', KEYS[6], keep)
redis.call('HINCRBY', KEYS[7], 'runs_finished|' .. ARGV[2], 1)
return {'finished', ARGV[2]}

-- Automation (SPEC AUTO-4): record how one task ended, once per task index, and count it. The
-- call that records the last task moves the run to 'completing' (the master then claims the
-- complete step).
--
-- KEYS[1]  conveyor:automation:run:{id}            (hash)
-- KEYS[2]  conveyor:automation:run:{id}:results    (hash: task index -> result JSON)
-- KEYS[3]  conveyor:automation:rejected:{workflow} (count of rejected stale writes)
-- ARGV[1]  task index   ARGV[2] the task's fence   ARGV[3] '1' ok | '0' failed
-- ARGV[4]  src size (integer bytes)   ARGV[5] dest size   ARGV[6] result JSON
--
-- Returns {outcome, succeeded, failed, total}: outcome 'recorded', 'last' (this call ended the
-- run's last task), 'duplicate' (the index was recorded before: a redelivered task),
-- 'missing', 'finished' (the run expired meanwhile: nothing recorded) or 'stale' (fence is not
-- the one the task list was published under; counted).
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing', 0, 0, 0} end
local function totals(outcome)
  local v = redis.call('HMGET', KEYS[1], 'succeeded', 'failed', 'total')
  return {outcome, tonumber(v[1]) or 0, tonumber(v[2]) or 0, tonumber(v[3]) or 0}
end
if redis.call('HGET', KEYS[1], 'state') == 'expired' then return totals('finished') end
if redis.call('HGET', KEYS[1], 'tasks_fence') ~= ARGV[2] then
  redis.call('INCR', KEYS[3])
  return totals('stale')
end
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[6]) == 0 then return totals('duplicate') end
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
if ARGV[3] == '1' then
  redis.call('HINCRBY', KEYS[1], 'succeeded', 1)
else
  redis.call('HINCRBY', KEYS[1], 'failed', 1)
end
redis.call('HINCRBY', KEYS[1], 'src_size_total', ARGV[4])
redis.call('HINCRBY', KEYS[1], 'dest_size_total', ARGV[5])
local result = totals('recorded')
if result[2] + result[3] >= result[4]
    and redis.call('HGET', KEYS[1], 'state') == 'executing' then
  redis.call('HSET', KEYS[1], 'state', 'completing')
  result[1] = 'last'
end
return result

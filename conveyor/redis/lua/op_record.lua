-- Bulk operations (SPEC OPS-1, OPS-2): count successes and failed items, and detect completion.
-- Everything happens in this one script, so the call whose counts reach total_items is the only
-- one that sees the operation complete (even when batches finish at the same instant), and a
-- batch id counted once is never counted again (a retried or redelivered batch is a no-op).
--
-- KEYS[1]  background_operation:{id}               (hash)
-- KEYS[2]  background_operation:{id}:failed_items  (list of JSON objects)
-- KEYS[3]  background_operation:{id}:batches       (set of batch ids already counted)
-- KEYS[4]  queues                                  (set; for the completion job)
-- KEYS[5]  queue:<completion queue>                (list; the completion job is pushed here)
-- ARGV[1]  batch id; '' counts without the once-per-batch check (increment_successful...)
-- ARGV[2]  number of successful items
-- ARGV[3]  now, epoch seconds (completed_at)
-- ARGV[4]  completion queue name; '' pushes nothing on completion
-- ARGV[5]  completion job payload (JSON)
-- ARGV[6..] failed items (JSON objects)
--
-- Returns {outcome, successful_items, failed_items, total_items} where outcome is 'missing'
-- (no such operation: expired or deleted; nothing is written), 'duplicate' (batch already
-- counted), 'counted' or 'completed' (this call completed the operation).
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'missing', 0, 0, 0}
end
local ttl = redis.call('PTTL', KEYS[1])
local function totals(outcome)
  local v = redis.call('HMGET', KEYS[1], 'successful_items', 'failed_items', 'total_items')
  return {outcome, tonumber(v[1]) or 0, tonumber(v[2]) or 0, tonumber(v[3]) or 0}
end
if ARGV[1] ~= '' then
  if redis.call('SADD', KEYS[3], ARGV[1]) == 0 then
    return totals('duplicate')
  end
  if ttl > 0 then redis.call('PEXPIRE', KEYS[3], ttl) end
end
local ok = tonumber(ARGV[2])
if ok > 0 then
  redis.call('HINCRBY', KEYS[1], 'successful_items', ok)
end
if #ARGV >= 6 then
  redis.call('RPUSH', KEYS[2], unpack(ARGV, 6))
  redis.call('HINCRBY', KEYS[1], 'failed_items', #ARGV - 5)
  if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
end
if redis.call('HGET', KEYS[1], 'status') == 'pending' then
  redis.call('HSET', KEYS[1], 'status', 'running')
end
local result = totals('counted')
if result[2] + result[3] >= result[4]
    and redis.call('HSETNX', KEYS[1], 'completed_at', ARGV[3]) == 1 then
  result[1] = 'completed'
  if ARGV[4] ~= '' then
    redis.call('SADD', KEYS[4], ARGV[4])
    redis.call('LPUSH', KEYS[5], ARGV[5])
  end
end
return result

-- Automation (SPEC AUTO-3, AUTO-4): the master publishes a run's task list and enqueues one
-- Conveyor job per task, in one step, under its fence. A stale master's list is refused whole:
-- nothing is enqueued.
--
-- KEYS[1]  conveyor:automation:run:{id}             (hash)
-- KEYS[2]  conveyor:automation:fence:{workflow}     (highest fence seen)
-- KEYS[3]  conveyor:automation:rejected:{workflow}  (count of rejected stale writes)
-- KEYS[4]  queues (set)                             KEYS[5] queue:<task queue> (list)
-- ARGV[1]  fence   ARGV[2] task queue name   ARGV[3] now
-- ARGV[4..] task job payloads (JSON), task index order
--
-- Returns {outcome, state}: 'published', 'stale' (fence below the highest seen or not the
-- run's; counted), 'missing', or 'state' (the run is past preparing: published already).
local high = tonumber(redis.call('GET', KEYS[2]) or '0')
local fence = tonumber(ARGV[1])
if fence < high then
  redis.call('INCR', KEYS[3])
  return {'stale', ''}
end
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing', ''} end
local v = redis.call('HMGET', KEYS[1], 'state', 'fence')
if tonumber(v[2] or '0') ~= fence then
  redis.call('INCR', KEYS[3])
  return {'stale', v[1]}
end
if v[1] ~= 'preparing' then return {'state', v[1]} end
local total = #ARGV - 3
local state = 'executing'
if total == 0 then state = 'completing' end
redis.call('HSET', KEYS[1], 'total', total, 'tasks_fence', ARGV[1], 'state', state,
  'published_at', ARGV[3])
local i = 4
while i <= #ARGV do
  local j = math.min(i + 999, #ARGV)
  redis.call('LPUSH', KEYS[5], unpack(ARGV, i, j))
  i = j + 1
end
if total > 0 then redis.call('SADD', KEYS[4], ARGV[2]) end
return {'published', state}

-- Automation (SPEC AUTO-4): a node is about to run one task of a run. Marks the task started
-- (for the run's `running` count) and says whether to run it at all.
--
-- KEYS[1]  conveyor:automation:run:{id}           (hash)
-- KEYS[2]  conveyor:automation:run:{id}:started   (hash: task index -> node id)
-- KEYS[3]  conveyor:automation:run:{id}:results   (hash: task index -> result JSON)
-- KEYS[4]  conveyor:automation:rejected:{workflow} (count of rejected stale writes)
-- ARGV[1]  task index   ARGV[2] the task's fence   ARGV[3] node id
--
-- Returns 'run', 'missing' (run deleted, or gone after it finished), 'finished' (the run
-- ended, e.g. expired, before this task started), 'recorded' (a result exists: a redelivered
-- task that already ended) or 'stale' (the task was not handed out under the run's published
-- list; counted in KEYS[4]).
if redis.call('EXISTS', KEYS[1]) == 0 then return 'missing' end
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'done' or state == 'failed' or state == 'expired' then return 'finished' end
if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1 then return 'recorded' end
if redis.call('HGET', KEYS[1], 'tasks_fence') ~= ARGV[2] then
  redis.call('INCR', KEYS[4])
  return 'stale'
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
return 'run'

-- Automation (issue #15): end an unfinished run that outlived the workflow's run TTL, whatever
-- its state and whichever master (if any) holds it. Not fenced: it only moves a run that is
-- past its deadline, and every later master write finds the run finished.
--
-- KEYS[1]  conveyor:automation:run:{id}            (hash)
-- KEYS[2]  conveyor:automation:active:{workflow}   (set of unfinished run ids)
-- KEYS[3]  conveyor:automation:run:{id}:results    KEYS[4] conveyor:automation:run:{id}:started
-- KEYS[5]  conveyor:automation:metrics:{workflow}  (runs_finished|expired counted)
-- ARGV[1]  run id   ARGV[2] now   ARGV[3] runs created at or before this expire
-- ARGV[4]  the error recorded   ARGV[5] seconds to keep the expired run
--
-- Returns 'expired', 'young' (created after ARGV[3]), 'state' (finished already; dropped from
-- KEYS[2]) or 'missing' (no such run; dropped from KEYS[2]).
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[2], ARGV[1])
  return 'missing'
end
local v = redis.call('HMGET', KEYS[1], 'state', 'created_at')
if v[1] == 'done' or v[1] == 'failed' or v[1] == 'expired' then
  redis.call('SREM', KEYS[2], ARGV[1])
  return 'state'
end
if tonumber(v[2] or '0') > tonumber(ARGV[3]) then return 'young' end
redis.call('HSET', KEYS[1], 'state', 'expired', 'finished_at', ARGV[2], 'error', ARGV[4],
  'expired_from', v[1] or '')
redis.call('SREM', KEYS[2], ARGV[1])
local keep = tonumber(ARGV[5])
redis.call('EXPIRE', KEYS[1], keep)
redis.call('EXPIRE', KEYS[3], keep)
redis.call('EXPIRE', KEYS[4], keep)
redis.call('HINCRBY', KEYS[5], 'runs_finished|expired', 1)
return 'expired'

-- Automation (SPEC AUTO-3, AUTO-8): create a workflow run, once. A run requested by a client
-- is created by any node without a fence (the master adopts it); a scheduled run is created by
-- the master, which claims the cron tick in the same step and must hold the newest fence.
--
-- KEYS[1]  conveyor:automation:run:{id}          (hash)
-- KEYS[2]  conveyor:automation:runs              (zset of run ids by creation time)
-- KEYS[3]  conveyor:automation:runs:{workflow}   (zset)
-- KEYS[4]  conveyor:automation:active:{workflow} (set of unfinished run ids)
-- KEYS[5]  conveyor:automation:fence:{workflow}  (highest fence seen)
-- KEYS[6]  conveyor:automation:rejected:{workflow} (count of rejected stale writes)
-- KEYS[7]  conveyor:automation:cron:{workflow}   (last cron tick claimed)
-- ARGV[1]  run id      ARGV[2] workflow   ARGV[3] now (epoch seconds)
-- ARGV[4]  request vars (JSON)            ARGV[5] prepare '1'|'0'   ARGV[6] complete '1'|'0'
-- ARGV[7]  source      ARGV[8] fence ('' = no fence check, a client request)
-- ARGV[9]  cron tick ('' = not scheduled)   ARGV[10] execute '1'|'0'
-- ARGV[11] most unfinished runs the workflow may have ('' = no cap)
--
-- Returns 'created', 'exists' (the id is taken), 'stale' (fence below the highest seen; counted
-- in KEYS[6]), 'baseline' (the first tick ever seen: remembered, no run), 'claimed' (this
-- tick was already claimed) or 'full' (the workflow has ARGV[11] unfinished runs already).
if ARGV[8] ~= '' then
  local high = tonumber(redis.call('GET', KEYS[5]) or '0')
  local fence = tonumber(ARGV[8])
  if fence < high then
    redis.call('INCR', KEYS[6])
    return 'stale'
  end
  if fence > high then redis.call('SET', KEYS[5], ARGV[8]) end
end
if ARGV[9] ~= '' then
  local last = redis.call('GET', KEYS[7])
  if last and tonumber(ARGV[9]) <= tonumber(last) then return 'claimed' end
  redis.call('SET', KEYS[7], ARGV[9])
  if not last then return 'baseline' end
end
if redis.call('EXISTS', KEYS[1]) == 1 then return 'exists' end
if ARGV[11] ~= '' and redis.call('SCARD', KEYS[4]) >= tonumber(ARGV[11]) then return 'full' end
redis.call('HSET', KEYS[1],
  'id', ARGV[1], 'workflow', ARGV[2], 'state', 'preparing', 'fence', '0', 'tasks_fence', '0',
  'total', '0', 'succeeded', '0', 'failed', '0', 'src_size_total', '0', 'dest_size_total', '0',
  'master', '', 'created_at', ARGV[3], 'request', ARGV[4], 'prepare', ARGV[5],
  'complete', ARGV[6], 'source', ARGV[7], 'execute', ARGV[10])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
redis.call('SADD', KEYS[4], ARGV[1])
return 'created'

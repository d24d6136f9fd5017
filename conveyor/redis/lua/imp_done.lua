-- Imports: one unit of a stage finished (a record job, or the stage job itself with the token
-- '~stage'). Removes the token from the stage's pending set (counting it once: a redelivered
-- job finds it gone), and the call that empties the set advances the import: it opens the next
-- stage and pushes its job, or marks the import finished after the last stage. No worker
-- waits for a stage: the last job to end moves the import on.
--
-- KEYS[1]  conveyor:import:{id}                       (hash)
-- KEYS[2]  conveyor:import:{id}:pending:{stage}       (set)
-- KEYS[3]  conveyor:imports:running                   (zset)
-- KEYS[4]  conveyor:import:{id}:pending:{next stage}  (set; unused after the last stage)
-- KEYS[5]  queues (set)        KEYS[6]  queue:<stage queue> (list)
-- ARGV[1]  import id   ARGV[2]  stage   ARGV[3]  token   ARGV[4]  now
-- ARGV[5]  1 when the record failed (counted in failed:{stage}), else 0
-- ARGV[6]  next stage ('' after the last stage)   ARGV[7]  stage queue name
-- ARGV[8]  next stage job payload (JSON)          ARGV[9]  TTL of the keys, seconds
--
-- Returns 'inactive' (the import is not running: nothing changes), 'duplicate' (token not
-- pending), 'counted', 'advanced' or 'finished'.
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 'inactive' end
if redis.call('SREM', KEYS[2], ARGV[3]) == 0 then return 'duplicate' end
local stage = ARGV[2]
if ARGV[3] ~= '~stage' then
  redis.call('HINCRBY', KEYS[1], 'done:' .. stage, 1)
  if ARGV[5] == '1' then redis.call('HINCRBY', KEYS[1], 'failed:' .. stage, 1) end
end
redis.call('HSET', KEYS[1], 'progressed_at', ARGV[4])
redis.call('ZADD', KEYS[3], 'XX', ARGV[4], ARGV[1])
if redis.call('SCARD', KEYS[2]) > 0 then return 'counted' end
if redis.call('HSETNX', KEYS[1], 'advanced:' .. stage, ARGV[4]) == 0 then return 'counted' end
if ARGV[6] == '' then
  redis.call('HSET', KEYS[1], 'status', 'finished', 'finished_at', ARGV[4])
  redis.call('ZREM', KEYS[3], ARGV[1])
  return 'finished'
end
redis.call('HSET', KEYS[1], 'stage', ARGV[6])
redis.call('SADD', KEYS[4], '~stage')
redis.call('EXPIRE', KEYS[4], ARGV[9])
redis.call('SADD', KEYS[5], ARGV[7])
redis.call('LPUSH', KEYS[6], ARGV[8])
return 'advanced'

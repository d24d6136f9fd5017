-- Imports (SPEC IMP-*): create an import and open its first stage, pushing the first stage job
-- in the same step, so an import that exists always has a job that will move it.
--
-- KEYS[1]  conveyor:import:{id}                  (hash)
-- KEYS[2]  conveyor:imports                      (zset: id by creation time)
-- KEYS[3]  conveyor:imports:running              (zset: id by last progress)
-- KEYS[4]  conveyor:import:{id}:pending:{stage}  (set; the first stage's pending tokens)
-- KEYS[5]  queues                                (set)
-- KEYS[6]  queue:<stage queue>                   (list)
-- ARGV[1]  import id          ARGV[2]  now (epoch seconds)
-- ARGV[3]  TTL of the import's keys, seconds
-- ARGV[4]  stage queue name   ARGV[5]  first stage job payload (JSON)
-- ARGV[6..] field, value pairs of the import hash
--
-- Returns 1 (created) or 0 (an import with this id exists; nothing written).
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 6))
redis.call('HSET', KEYS[1], 'created_at', ARGV[2], 'progressed_at', ARGV[2], 'status', 'running')
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
redis.call('SADD', KEYS[4], '~stage')
redis.call('EXPIRE', KEYS[4], ARGV[3])
redis.call('SADD', KEYS[5], ARGV[4])
redis.call('LPUSH', KEYS[6], ARGV[5])
return 1

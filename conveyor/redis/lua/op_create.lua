-- Bulk operations (SPEC OPS-1): create an operation's hash with its TTL and list it in the
-- registry, unless an operation with this id exists or already finished (so a redelivered
-- scheduler job finds its operation instead of starting a second one).
--
-- KEYS[1]  background_operation:{id}             (hash)
-- KEYS[2]  conveyor:background-operation-finished:{id}  (final totals of a deleted operation)
-- KEYS[3]  conveyor:background-operations        (zset: id -> created_at)
-- ARGV[1]  TTL in seconds (72 hours)
-- ARGV[2]  created_at, epoch seconds
-- ARGV[3]  operation id
-- ARGV[4..] field, value pairs of the hash
--
-- Returns 'created', 'exists' (the hash is there, left untouched) or 'finished'.
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 'finished'
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 'exists'
end
for i = 4, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[3])
return 'created'

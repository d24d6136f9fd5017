-- Automation (issue #16): a node answers one real-time task: push the result for the waiting
-- web process and free the request's slot, in one step.
--
-- KEYS[1]  conveyor:automation:reply:{request id}  (list)
-- KEYS[2]  conveyor:automation:realtime            (zset of requests in flight)
-- ARGV[1]  request id   ARGV[2] result JSON   ARGV[3] seconds to keep an unread answer
--
-- Returns the length of the reply list.
redis.call('ZREM', KEYS[2], ARGV[1])
local n = redis.call('RPUSH', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return n

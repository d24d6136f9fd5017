-- Automation (issues #15, #16): hand one real-time task to the nodes if the cluster has a free
-- real-time slot, in one step: forget requests whose caller gave up, count the rest, and push
-- the task job only when fewer than the capacity are in flight.
--
-- KEYS[1]  conveyor:automation:realtime    (zset: request id -> deadline, epoch seconds)
-- KEYS[2]  queues (set)                    KEYS[3] queue:<real-time queue> (list)
-- ARGV[1]  now   ARGV[2] capacity (free slots of every node that takes the workflow)
-- ARGV[3]  request id   ARGV[4] deadline   ARGV[5] queue name   ARGV[6] task job payload
--
-- Returns {admitted, in_flight}: admitted 1 (pushed) or 0 (the capacity is used up).
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
local busy = redis.call('ZCARD', KEYS[1])
if busy >= tonumber(ARGV[2]) then return {0, busy} end
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3])
redis.call('SADD', KEYS[2], ARGV[5])
redis.call('LPUSH', KEYS[3], ARGV[6])
return {1, busy + 1}

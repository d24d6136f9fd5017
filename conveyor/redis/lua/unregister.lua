-- A process leaving after a graceful shutdown: drop it from Sidekiq's process list and from
-- the working registry when its working list is empty (it requeued everything).
--
-- KEYS[1] processes (set)   KEYS[2] process hash   KEYS[3] <identity>:work   KEYS[4] <identity>:workers
-- KEYS[5] liveness key      KEYS[6] working registry (set)   KEYS[7] working list
-- KEYS[8] start boundary
-- ARGV[1] identity
--
-- The liveness key goes in any case, so jobs left behind are recovered at the next sweep.
-- Returns the number of jobs left in the working list.
redis.call('SREM', KEYS[1], ARGV[1])
redis.call('UNLINK', KEYS[2], KEYS[3], KEYS[4])
redis.call('DEL', KEYS[5])
local left = redis.call('LLEN', KEYS[7])
if left == 0 then
  redis.call('SREM', KEYS[6], ARGV[1])
  redis.call('DEL', KEYS[8])
end
return left

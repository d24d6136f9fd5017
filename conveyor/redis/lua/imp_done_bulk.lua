-- Imports: records a stage saved in bulk itself (no record job each), counted done once. The
-- tokens were registered by imp_pending.lua; a token no longer pending (a batch written again
-- after a crash) is not counted twice. The stage never advances here: its own '~stage' token
-- is still pending while the stage job runs (imp_done.lua moves the import on).
--
-- KEYS[1]  conveyor:import:{id}                  (hash)
-- KEYS[2]  conveyor:import:{id}:pending:{stage}  (set)
-- ARGV[1]  stage   ARGV[2]  now (epoch seconds)
-- ARGV[3..] record tokens
--
-- Returns how many tokens this call counted (0 when the import is not running).
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
local counted = 0
for i = 3, #ARGV do
  counted = counted + redis.call('SREM', KEYS[2], ARGV[i])
end
if counted > 0 then
  redis.call('HINCRBY', KEYS[1], 'done:' .. ARGV[1], counted)
  redis.call('HSET', KEYS[1], 'progressed_at', ARGV[2])
end
return counted

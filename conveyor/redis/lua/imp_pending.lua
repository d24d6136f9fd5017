-- Imports: register record tokens of a stage before their jobs are enqueued. A token is
-- counted in the stage's total once, ever (the seen set), so a stage job that runs again after
-- a crash neither counts a record twice nor re-opens one already finished.
--
-- KEYS[1]  conveyor:import:{id}                  (hash)
-- KEYS[2]  conveyor:import:{id}:pending:{stage}  (set)
-- KEYS[3]  conveyor:import:{id}:seen:{stage}     (set)
-- ARGV[1]  stage   ARGV[2]  now (epoch seconds)   ARGV[3]  TTL of the keys, seconds
-- ARGV[4..] record tokens
--
-- Returns per token 1 when its job must be enqueued (it is pending: new, or registered by a
-- run that may have crashed before enqueueing it) or 0 (finished already); {} when the import
-- is not running.
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return {} end
local out = {}
local added = 0
for i = 4, #ARGV do
  if redis.call('SADD', KEYS[3], ARGV[i]) == 1 then
    redis.call('SADD', KEYS[2], ARGV[i])
    added = added + 1
  end
  out[#out + 1] = redis.call('SISMEMBER', KEYS[2], ARGV[i])
end
if added > 0 then redis.call('HINCRBY', KEYS[1], 'total:' .. ARGV[1], added) end
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('EXPIRE', KEYS[3], ARGV[3])
return out

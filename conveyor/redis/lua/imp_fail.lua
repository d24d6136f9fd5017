-- Imports: fail running imports, either unconditionally (a stage job out of retries) or only
-- when their progress has not moved since a cutoff (the stuck-import detector). The cutoff is
-- checked here, in the same step as the write, so progress made after the detector read the
-- candidates saves the import.
--
-- KEYS[1]  conveyor:imports:running  (zset: id by last progress)
-- KEYS[2..] conveyor:import:{id}     (hashes, one per candidate)
-- ARGV[1]  cutoff (epoch seconds; '' fails unconditionally)
-- ARGV[2]  now    ARGV[3]  error message
-- ARGV[4..] import ids, in the order of KEYS[2..]
--
-- Returns the ids that were failed by this call.
local failed = {}
for i = 2, #KEYS do
  local id = ARGV[i + 2]
  if redis.call('HGET', KEYS[i], 'status') == 'running' then
    local score = tonumber(redis.call('ZSCORE', KEYS[1], id))
    if ARGV[1] == '' or (score and score <= tonumber(ARGV[1])) then
      redis.call('HSET', KEYS[i], 'status', 'failed', 'error', ARGV[3], 'finished_at', ARGV[2])
      redis.call('ZREM', KEYS[1], id)
      failed[#failed + 1] = id
    end
  end
end
return failed

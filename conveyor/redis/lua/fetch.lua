-- Reliable fetch: move up to ARGV[1] jobs from the queues, tried in order, into the
-- process's working list. A job is always in exactly one of the two lists. The process is
-- (re)registered in the working registry in the same step, so no working list exists that no
-- recovery sweep visits.
--
-- KEYS[1]     working list of the fetching process
-- KEYS[2]     working registry (set of identities)
-- KEYS[3..n]  queue lists (queue:<name>), in the order to try
-- ARGV[1]     maximum number of jobs to move
-- ARGV[2]     identity of the process
--
-- Returns a flat array {queue_index, payload, ...}; queue_index is 1-based into KEYS[3..n].
local want = tonumber(ARGV[1])
local out = {}
redis.call('SADD', KEYS[2], ARGV[2])
for i = 3, #KEYS do
  if want <= 0 then break end
  local got = redis.call('RPOP', KEYS[i], want)
  if got then
    redis.call('LPUSH', KEYS[1], unpack(got))
    for _, job in ipairs(got) do
      out[#out + 1] = i - 2
      out[#out + 1] = job
    end
    want = want - #got
  end
end
return out

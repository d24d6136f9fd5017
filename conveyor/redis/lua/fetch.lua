-- Reliable fetch: move up to ARGV[1] jobs from the queues, tried in order, into the
-- process's working list. A job is always in exactly one of the two lists.
--
-- KEYS[1]     working list of the fetching process
-- KEYS[2..n]  queue lists (queue:<name>), in the order to try
-- ARGV[1]     maximum number of jobs to move
--
-- Returns a flat array {queue_index, payload, ...}; queue_index is 1-based into KEYS[2..n].
local want = tonumber(ARGV[1])
local out = {}
for i = 2, #KEYS do
  if want <= 0 then break end
  local got = redis.call('RPOP', KEYS[i], want)
  if got then
    redis.call('LPUSH', KEYS[1], unpack(got))
    for _, job in ipairs(got) do
      out[#out + 1] = i - 1
      out[#out + 1] = job
    end
    want = want - #got
  end
end
return out

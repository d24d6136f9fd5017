-- Reliable fetch: move up to ARGV[1] jobs from the queues, tried in order, into the
-- process's working list. A job is always in exactly one of the two lists. The process is
-- (re)registered in the working registry in the same step, so no working list exists that no
-- recovery sweep visits, and the start boundary is published (docs/reliability.md): jobs
-- from the boundary to the newest are ones the process has not started.
--
-- KEYS[1]     working list of the fetching process
-- KEYS[2]     working registry (set of identities)
-- KEYS[3]     start boundary of the process (string: the oldest job it has not started)
-- KEYS[4..n]  queue lists (queue:<name>), in the order to try
-- ARGV[1]     maximum number of jobs to move
-- ARGV[2]     identity of the process
-- ARGV[3]     the boundary job (payload), or '' to set it from this batch
-- ARGV[4]     when ARGV[3] is '': how many of this batch's jobs start at once (the boundary
--             is the next one; none left: no boundary, every job counts as started)
--
-- Returns a flat array {queue_index, payload, ...}; queue_index is 1-based into KEYS[4..n].
local want = tonumber(ARGV[1])
local out = {}
local first = nil
redis.call('SADD', KEYS[2], ARGV[2])
local skip = tonumber(ARGV[4])
local boundary = nil
for i = 4, #KEYS do
  if want <= 0 then break end
  local got = redis.call('RPOP', KEYS[i], want)
  if got then
    redis.call('LPUSH', KEYS[1], unpack(got))
    for _, job in ipairs(got) do
      out[#out + 1] = i - 3
      out[#out + 1] = job
      if skip == 0 and boundary == nil then boundary = job end
      skip = skip - 1
    end
    want = want - #got
  end
end
if ARGV[3] ~= '' then
  redis.call('SET', KEYS[3], ARGV[3])
elseif boundary then
  redis.call('SET', KEYS[3], boundary)
else
  redis.call('DEL', KEYS[3])
end
return out

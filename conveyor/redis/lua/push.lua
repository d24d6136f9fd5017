-- Enqueue: push payloads onto their queues and/or into the schedule set, in one atomic step.
-- Used by the durable enqueue, which sends a WAIT right behind it in the same round trip: a
-- WAIT inside MULTI does not block, so that push cannot be a MULTI transaction.
--
-- KEYS[1]     queues (set of queue names)
-- KEYS[2]     schedule (sorted set)
-- KEYS[3..n]  queue lists, in the order of the groups below
-- ARGV[1]     G, the number of queue groups
-- ARGV        then G groups: queue name, count c, c payloads (oldest first; each LPUSHed)
-- ARGV        then pairs until the end: score, payload (for the schedule set)
--
-- Returns the number of payloads written.
local CHUNK = 1000 -- unpack() is bounded by Lua's C stack (8000 values)
local pos = 2
local written = 0
for g = 1, tonumber(ARGV[1]) do
  local queue, count = ARGV[pos], tonumber(ARGV[pos + 1])
  pos = pos + 2
  redis.call('SADD', KEYS[1], queue)
  for first = pos, pos + count - 1, CHUNK do
    local last = math.min(first + CHUNK - 1, pos + count - 1)
    redis.call('LPUSH', KEYS[2 + g], unpack(ARGV, first, last))
  end
  pos = pos + count
  written = written + count
end
for i = pos, #ARGV, 2 do
  redis.call('ZADD', KEYS[2], ARGV[i], ARGV[i + 1])
  written = written + 1
end
return written

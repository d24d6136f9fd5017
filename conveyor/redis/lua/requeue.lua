-- Give jobs back: take each out of a working list and push it onto the consuming end of its
-- queue so it runs next. Used by graceful shutdown and for prefetched jobs never started.
--
-- KEYS[1]     working list
-- KEYS[2]     queues (set of queue names)
-- KEYS[3..n]  queue lists
-- ARGV        groups of 3: payload as fetched, index into KEYS of its queue list, queue name
--
-- Returns the number of jobs requeued.
local moved = 0
for i = 1, #ARGV, 3 do
  if redis.call('LREM', KEYS[1], -1, ARGV[i]) > 0 then
    redis.call('RPUSH', KEYS[tonumber(ARGV[i + 1])], ARGV[i])
    redis.call('SADD', KEYS[2], ARGV[i + 2])
    moved = moved + 1
  end
end
return moved

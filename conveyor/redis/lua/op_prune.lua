-- Bulk operations: drop registry entries whose operation hash is gone (expired after 72 hours
-- or deleted) and return the live ids, oldest first. Admin path (listing).
--
-- KEYS[1]  conveyor:background-operations  (zset: id -> created_at)
-- ARGV[1]  key of an operation hash without its id (prefix .. 'background_operation:')
--
-- Returns the ids whose hash exists.
local live = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if redis.call('EXISTS', ARGV[1] .. id) == 1 then
    live[#live + 1] = id
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return live

-- An until_executed job finished (or failed): release its cookie.
--
-- KEYS[1]  dedup cookie
-- ARGV[1]  jid of the finished job
--
-- Returns 1 if a duplicate was dropped while it ran, 0 if not, -1 if it did not hold the cookie.
if redis.call('HGET', KEYS[1], 'jid') ~= ARGV[1] then return -1 end
local dropped = redis.call('HGET', KEYS[1], 'deduplicated')
redis.call('DEL', KEYS[1])
if dropped == '1' then return 1 end
return 0

-- Leader election (issue #6): give up the term (ARGV[1], ARGV[2]) of a Redis-held lease if it
-- is still the current one. The hash stays (marked released, expiry cut to now) so peek shows
-- the last holder and the fence keeps counting up.
--
-- KEYS[1]  conveyor:lease:{name}  (hash: holder, fence, expires_ms, renewed, released)
-- ARGV[1]  holder of the term
-- ARGV[2]  fence of the term
--
-- Returns 1 if this call released the term, 0 if there was nothing to release.
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cur = redis.call('HMGET', KEYS[1], 'holder', 'fence', 'expires_ms', 'released')
if cur[1] ~= ARGV[1] or cur[2] ~= ARGV[2] or cur[4] == '1' then
  return 0
end
local expires = tonumber(cur[3]) or now
redis.call('HSET', KEYS[1], 'released', 1, 'expires_ms', math.min(expires, now))
return 1

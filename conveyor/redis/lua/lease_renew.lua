-- Leader election (issue #6): extend the live term (ARGV[1], ARGV[2]) of a Redis-held lease.
-- A term that expired, was released or was taken over is not renewed: its holder must acquire
-- a new term (with a new fence).
--
-- KEYS[1]  conveyor:lease:{name}  (hash: holder, fence, expires_ms, renewed, released)
-- ARGV[1]  holder of the term
-- ARGV[2]  fence of the term
-- ARGV[3]  ttl in milliseconds (integer > 0)
--
-- Returns {1, holder, fence, expires_ms} when renewed, {0} when the term is lost.
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cur = redis.call('HMGET', KEYS[1], 'holder', 'fence', 'expires_ms', 'renewed', 'released')
local expires = tonumber(cur[3])
if cur[1] ~= ARGV[1] or cur[2] ~= ARGV[2] or not expires or expires <= now or cur[5] == '1' then
  return {0}
end
local until_ms = now + tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'expires_ms', until_ms, 'renewed', (tonumber(cur[4]) or 0) + 1)
return {1, cur[1], cur[2], tostring(until_ms)}

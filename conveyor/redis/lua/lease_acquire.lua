-- Leader election (issue #6): take a Redis-held lease for ARGV[1], or renew it if ARGV[1]
-- holds it already. Expiry is judged against this Redis server's TIME, so the nodes' own
-- clocks never enter into it.
--
-- KEYS[1]  conveyor:lease:{name}        (hash: holder, fence, expires_ms, renewed, released)
-- KEYS[2]  conveyor:lease-fence:{name}  (counter: INCR on every new term, never expires)
-- ARGV[1]  holder (node identity)
-- ARGV[2]  ttl in milliseconds (integer > 0)
--
-- Returns {ok, holder, fence, expires_ms}: ok = 1 with the caller's term (new or renewed),
-- ok = 0 with the live term of another holder. Numbers are returned as strings (a Lua number
-- would be truncated to an integer reply).
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
local cur = redis.call('HMGET', KEYS[1], 'holder', 'fence', 'expires_ms', 'renewed', 'released')
local holder, fence, expires = cur[1], tonumber(cur[2]), tonumber(cur[3])
local live = holder and fence and expires and expires > now and cur[5] ~= '1'
if live and holder ~= ARGV[1] then
  return {0, holder, tostring(fence), tostring(expires)}
end
local until_ms = now + ttl
if live then
  redis.call('HSET', KEYS[1], 'expires_ms', until_ms, 'renewed', (tonumber(cur[4]) or 0) + 1)
  return {1, holder, tostring(fence), tostring(until_ms)}
end
local new = redis.call('INCR', KEYS[2])
if fence and new <= fence then
  -- The counter was lost (deleted, restored from an older snapshot): never reuse a fence.
  new = fence + 1
  redis.call('SET', KEYS[2], new)
end
redis.call('HSET', KEYS[1], 'holder', ARGV[1], 'fence', new, 'expires_ms', until_ms,
  'renewed', 0, 'released', 0)
return {1, ARGV[1], tostring(new), tostring(until_ms)}

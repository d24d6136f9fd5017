-- Count one failed dashboard login against each of KEYS (the client, and the user when one
-- was named). A counter lives ARGV[1] ms from its first failure; once it reaches ARGV[2] its
-- window starts again at every further failure, so a locked-out guesser stays locked out.
--
-- KEYS[i]  conveyor:web:login-failures:{client|user}:{digest}   (counter with a TTL)
-- ARGV[1]  window in milliseconds (integer > 0)
-- ARGV[2]  failures allowed in a window (integer > 0)
--
-- Returns {count, ttl_ms} for each key, flattened.
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local out = {}
for _, key in ipairs(KEYS) do
  local count = redis.call('INCR', key)
  if count == 1 or count >= limit then
    redis.call('PEXPIRE', key, window)
  end
  local ttl = redis.call('PTTL', key)
  if ttl < 0 then
    -- A counter that lost its TTL (restored without it) must not lock anyone out forever.
    redis.call('PEXPIRE', key, window)
    ttl = window
  end
  out[#out + 1] = count
  out[#out + 1] = ttl
end
return out

-- Count one failed (or, for the login form, one not yet checked) dashboard login against each
-- of KEYS (the client, and the user when one was named). A counter lives ARGV[1] ms from its
-- first failure, and ARGV[1] ms again from the failure that reaches ARGV[2]: the lockout lasts
-- a whole window. Attempts refused during the lockout are counted without extending it, so
-- "try again in N seconds" stays true for whoever tries again early.
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
  if count == 1 or count == limit then
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

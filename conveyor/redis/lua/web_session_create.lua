-- A dashboard login: record the session, index it by expiry, and keep at most ARGV[5]
-- sessions (the oldest are revoked first), so logins cannot grow Redis without bound.
--
-- KEYS[1]  conveyor:web:session:{digest}   (hash: user, cred, created_ms)
-- KEYS[2]  conveyor:web:sessions           (zset: digest -> expiry in epoch ms)
-- ARGV[1]  digest (SHA-256 of the session id)
-- ARGV[2]  user name
-- ARGV[3]  credential id the session was made under
-- ARGV[4]  lifetime in milliseconds (integer > 0)
-- ARGV[5]  most sessions kept (integer > 0)
-- ARGV[6]  prefix of the session keys (conveyor:web:session:)
--
-- Returns the number of sessions revoked to make room.
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('HSET', KEYS[1], 'user', ARGV[2], 'cred', ARGV[3], 'created_ms', now)
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[2], now + ttl, ARGV[1])
local extra = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[5])
if extra <= 0 then return 0 end
local oldest = redis.call('ZRANGE', KEYS[2], 0, extra - 1)
for _, digest in ipairs(oldest) do
  redis.call('DEL', ARGV[6] .. digest)
  redis.call('ZREM', KEYS[2], digest)
end
return #oldest

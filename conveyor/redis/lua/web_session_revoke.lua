-- Revoke dashboard sessions: one (logout), or every one made under other credentials (the
-- password or token changed). Index entries of sessions that expired are dropped too.
--
-- KEYS[1]  conveyor:web:sessions   (zset: digest -> expiry in epoch ms)
-- ARGV[1]  'one' or 'other-credentials'
-- ARGV[2]  the digest ('one') or the current credential id ('other-credentials')
-- ARGV[3]  prefix of the session keys (conveyor:web:session:)
--
-- Returns the number of sessions revoked.
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if ARGV[1] == 'one' then
  redis.call('ZREM', KEYS[1], ARGV[2])
  return redis.call('DEL', ARGV[3] .. ARGV[2])
end
local revoked = 0
for _, digest in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local cred = redis.call('HGET', ARGV[3] .. digest, 'cred')
  if cred ~= ARGV[2] then
    revoked = revoked + redis.call('DEL', ARGV[3] .. digest)
    redis.call('ZREM', KEYS[1], digest)
  end
end
return revoked

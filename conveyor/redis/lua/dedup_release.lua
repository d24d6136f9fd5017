-- until_executed jobs finished (or failed): release their cookies (a batch).
--
-- KEYS[i]  dedup cookie of job i
-- ARGV[i]  jid of job i
--
-- Returns, per job, 1 if a duplicate was dropped while it ran, 0 if not, -1 if it did not hold
-- the cookie.
local out = {}
for k = 1, #KEYS do
  if redis.call('HGET', KEYS[k], 'jid') ~= ARGV[k] then
    out[k] = -1
  else
    local dropped = redis.call('HGET', KEYS[k], 'deduplicated')
    redis.call('DEL', KEYS[k])
    out[k] = dropped == '1' and 1 or 0
  end
end
return out

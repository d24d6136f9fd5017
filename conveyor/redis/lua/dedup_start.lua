-- A deduplicated job starts. until_executing releases the cookie now; until_executed marks it
-- running (duplicates dropped from now on are noted for reschedule_once). Only the job that
-- holds the cookie touches it.
--
-- KEYS[1]  dedup cookie
-- ARGV[1]  jid of the starting job
-- ARGV[2]  'release' (until_executing) or 'running' (until_executed)
--
-- Returns the cookie's WAL locations as a flat list {db, lsn, ...} ({} if not the holder).
if redis.call('HGET', KEYS[1], 'jid') ~= ARGV[1] then return {} end
local out = {}
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  if string.sub(fields[i], 1, 4) == 'wal:' then
    out[#out + 1] = string.sub(fields[i], 5)
    out[#out + 1] = fields[i + 1]
  end
end
if ARGV[2] == 'release' then
  redis.call('DEL', KEYS[1])
else
  redis.call('HSET', KEYS[1], 'running', '1')
end
return out

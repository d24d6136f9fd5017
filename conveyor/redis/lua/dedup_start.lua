-- Deduplicated jobs start (a fetched batch). until_executing releases the cookie now;
-- until_executed marks it running (duplicates dropped from now on are noted for
-- reschedule_once). Only the job that holds a cookie touches it.
--
-- KEYS[i]  dedup cookie of job i
-- ARGV     per job, in KEYS order: jid, 'release' (until_executing) or 'running' (until_executed)
--
-- Returns, per job, the cookie's WAL locations as a flat list {db, lsn, ...} ({} if not the
-- holder).
local out = {}
for k = 1, #KEYS do
  local key, jid, mode = KEYS[k], ARGV[2 * k - 1], ARGV[2 * k]
  local wal = {}
  if redis.call('HGET', key, 'jid') == jid then
    local fields = redis.call('HGETALL', key)
    for i = 1, #fields, 2 do
      if string.sub(fields[i], 1, 4) == 'wal:' then
        wal[#wal + 1] = string.sub(fields[i], 5)
        wal[#wal + 1] = fields[i + 1]
      end
    end
    if mode == 'release' then
      redis.call('DEL', key)
    else
      redis.call('HSET', key, 'running', '1')
    end
  end
  out[k] = wal
end
return out

-- Deduplication at enqueue, for a batch: for each job, claim the cookie of its (class,
-- arguments) digest, or find the job that holds it. When the caller will drop its job ('drop'
-- mode), the holder's cookie keeps the newest WAL location per database, and notes the drop if
-- the holder is running (so an until_executed job with reschedule_once runs once more). Jobs are
-- handled in order, so a later job in the batch sees the cookies of the earlier ones.
--
-- KEYS[i]  dedup cookie of job i (hash: jid, running, deduplicated, wal:<db> = LSN)
-- ARGV     per job, in KEYS order: jid, cookie TTL (ms), mode ('drop' or 'mark'),
--          number of WAL pairs n, then n pairs: database name, LSN ('16/B374D848')
--
-- Returns, per job, '' when it now holds the cookie, else the jid of the holder.
local function lsn(text)
  local hi, lo = string.match(text, '^(%x+)/(%x+)$')
  if not hi then return nil end
  return tonumber(hi, 16) * 4294967296 + tonumber(lo, 16)
end

local out = {}
local a = 1
for k = 1, #KEYS do
  local key, jid, ttl, mode = KEYS[k], ARGV[a], ARGV[a + 1], ARGV[a + 2]
  local n = tonumber(ARGV[a + 3])
  local first, last = a + 4, a + 3 + 2 * n
  a = last + 1
  local holder = redis.call('HGET', key, 'jid')
  if not holder then
    redis.call('HSET', key, 'jid', jid)
    for i = first, last, 2 do
      redis.call('HSET', key, 'wal:' .. ARGV[i], ARGV[i + 1])
    end
    redis.call('PEXPIRE', key, ttl)
    out[k] = ''
  else
    if mode == 'drop' then
      for i = first, last, 2 do
        local field = 'wal:' .. ARGV[i]
        local current = redis.call('HGET', key, field)
        local new = lsn(ARGV[i + 1])
        if new and (not current or not lsn(current) or new > lsn(current)) then
          redis.call('HSET', key, field, ARGV[i + 1])
        end
      end
      if redis.call('HGET', key, 'running') == '1' then
        redis.call('HSET', key, 'deduplicated', '1')
      end
    end
    out[k] = holder
  end
end
return out

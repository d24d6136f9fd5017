-- Deduplication at enqueue: claim the cookie of a (class, arguments) pair for this job, or find
-- the job that holds it. When the caller will drop its job ('drop' mode), the holder's cookie
-- keeps the newest WAL location per database, and notes the drop if the holder is running
-- (so an until_executed job with reschedule_once runs once more).
--
-- KEYS[1]  dedup cookie (hash: jid, running, deduplicated, wal:<db> = LSN)
-- ARGV[1]  jid of the job being enqueued
-- ARGV[2]  cookie TTL in milliseconds
-- ARGV[3]  'drop' (idempotent: a duplicate is dropped) or 'mark' (only marked duplicate-of)
-- ARGV[4..] pairs: database name, LSN ('16/B374D848')
--
-- Returns {0, ''} when this job now holds the cookie, else {1, jid of the holder}.
local function lsn(text)
  local hi, lo = string.match(text, '^(%x+)/(%x+)$')
  if not hi then return nil end
  return tonumber(hi, 16) * 4294967296 + tonumber(lo, 16)
end

local holder = redis.call('HGET', KEYS[1], 'jid')
if not holder then
  redis.call('HSET', KEYS[1], 'jid', ARGV[1])
  for i = 4, #ARGV, 2 do
    redis.call('HSET', KEYS[1], 'wal:' .. ARGV[i], ARGV[i + 1])
  end
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {0, ''}
end
if ARGV[3] == 'drop' then
  for i = 4, #ARGV, 2 do
    local field = 'wal:' .. ARGV[i]
    local current = redis.call('HGET', KEYS[1], field)
    local new = lsn(ARGV[i + 1])
    if new and (not current or not lsn(current) or new > lsn(current)) then
      redis.call('HSET', KEYS[1], field, ARGV[i + 1])
    end
  end
  if redis.call('HGET', KEYS[1], 'running') == '1' then
    redis.call('HSET', KEYS[1], 'deduplicated', '1')
  end
end
return {1, holder}

-- Destroy or disable a cron entry of a retired job class (conveyor.maintenance.remove_jobs),
-- only if its definition is still the one the caller read (compare and set: the caller
-- rewrote the JSON in Python, so cjson never re-encodes it).
--
-- KEYS[1]  cron definitions (hash: entry name -> JSON)
-- KEYS[2]  the entry's last-tick key
-- ARGV[1]  entry name    ARGV[2]  definition as read    ARGV[3]  'destroy' or 'replace'
-- ARGV[4]  new definition (for 'replace')
--
-- Returns 1 if changed, 0 if the definition changed meanwhile (or the entry is gone).
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
if ARGV[3] == 'destroy' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('DEL', KEYS[2])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
end
return 1

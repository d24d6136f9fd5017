-- Forget processes whose heartbeat hash expired: they died without unregistering (Sidekiq's
-- ProcessSet#cleanup). The check and the removal happen in one step, so a process that
-- heartbeats again in between is never dropped from the set.
--
-- KEYS[1]     processes (set)
-- KEYS[2..n]  process hashes, one per identity in ARGV (same order)
-- ARGV[1..]   identities
--
-- Returns the number of identities removed.
local removed = 0
for i = 1, #ARGV do
  if redis.call('EXISTS', KEYS[i + 1]) == 0 then
    removed = removed + redis.call('SREM', KEYS[1], ARGV[i])
  end
end
return removed

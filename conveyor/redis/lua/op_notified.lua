-- Bulk operations (SPEC OPS-3): note that the failure e-mail went out, so a redelivered
-- completion job deletes the operation without sending a second e-mail.
--
-- KEYS[1]  background_operation:{id}  (hash)
-- ARGV[1]  now, epoch seconds (notified_at)
--
-- Returns 1 if this call set notified_at, 0 if it was set already, -1 if there is no operation.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
return redis.call('HSETNX', KEYS[1], 'notified_at', ARGV[1])

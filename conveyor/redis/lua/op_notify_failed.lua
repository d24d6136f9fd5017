-- Bulk operations: the failure e-mail of a finished operation could not be delivered (no
-- address for its user, or the SMTP server refused it). The operation stays visible, with
-- status notify_failed and the reason, until the e-mail is delivered or somebody dismisses it:
-- its keys stop expiring, so the report cannot be lost to the 72-hour TTL.
--
-- KEYS[1]  background_operation:{id}               (hash)
-- KEYS[2]  background_operation:{id}:failed_items  (list)
-- KEYS[3]  background_operation:{id}:batches       (set)
-- ARGV[1]  now, epoch seconds (notify_failed_at)
-- ARGV[2]  the reason (no personal data: never the address)
--
-- Returns 1 if marked, -1 if there is no operation.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
redis.call('HSET', KEYS[1], 'status', 'notify_failed', 'notify_failed_at', ARGV[1],
           'notify_error', ARGV[2])
redis.call('PERSIST', KEYS[1])
redis.call('PERSIST', KEYS[2])
redis.call('PERSIST', KEYS[3])
return 1

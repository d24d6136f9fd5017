-- Forget a queue name once its list is empty (after migrate_queue drained it). A producer that
-- still pushes there adds the name back in the same MULTI as its push, so nothing is hidden.
--
-- KEYS[1]  the queue list    KEYS[2]  queues (set of names)
-- ARGV[1]  the queue name
--
-- Returns 1 if the name was removed from the set, else 0.
if redis.call('LLEN', KEYS[1]) > 0 then return 0 end
return redis.call('SREM', KEYS[2], ARGV[1])

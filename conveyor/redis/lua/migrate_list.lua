-- Move jobs from one queue to another (conveyor.maintenance.migrate_queue). Python read the
-- entries and rewrote their `queue` field (cjson would re-encode the payload, turning `[]` into
-- `{}` and reformatting numbers); this script moves each entry only if it is still on the old
-- queue, so an entry a worker took meanwhile is neither lost nor duplicated.
--
-- KEYS[1]  old queue list    KEYS[2]  new queue list    KEYS[3]  queues (set of names)
-- ARGV[1]  new queue name
-- ARGV[2..] pairs: payload as stored on the old queue, payload to push on the new one;
--           oldest first, each pushed at the head (LPUSH) so they keep their order
--
-- Returns the number of jobs moved.
local moved = 0
for i = 2, #ARGV, 2 do
  if redis.call('LREM', KEYS[1], -1, ARGV[i]) > 0 then
    redis.call('LPUSH', KEYS[2], ARGV[i + 1])
    moved = moved + 1
  end
end
if moved > 0 then redis.call('SADD', KEYS[3], ARGV[1]) end
return moved

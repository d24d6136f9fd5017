-- Enqueue one cron tick exactly once however many processes try: the tick is claimed and the
-- job pushed in the same step, and only a tick newer than the last one claimed goes through.
--
-- KEYS[1]  last tick claimed for the entry (string, epoch seconds)
-- KEYS[2]  queues (set)          KEYS[3]  queue list
-- ARGV[1]  tick (epoch seconds)  ARGV[2]  payload   ARGV[3]  queue name
--
-- Returns 1 if this call enqueued the tick, 0 if it was already enqueued.
local last = tonumber(redis.call('GET', KEYS[1]) or '-1')
if tonumber(ARGV[1]) <= last then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('LPUSH', KEYS[3], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
return 1

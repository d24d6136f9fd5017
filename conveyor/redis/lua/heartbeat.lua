-- One heartbeat: register the process, publish its state (Sidekiq's fields, read by Sidekiq's
-- ProcessSet and Workers APIs, plus the health of its loops), refresh the liveness key that
-- orphan recovery checks, and pop one pending signal sent through Redis (TSTP = quiet,
-- TERM = stop).
--
-- KEYS[1] processes (set)     KEYS[2] process hash         KEYS[3] <identity>:work (Sidekiq 7)
-- KEYS[4] <identity>:workers (Sidekiq 6)                   KEYS[5] <identity>-signals (list)
-- KEYS[6] liveness key        KEYS[7] working registry (set)
-- ARGV[1] identity   ARGV[2] info JSON   ARGV[3] busy   ARGV[4] beat   ARGV[5] quiet ('true'/'false')
-- ARGV[6] rss (KB)   ARGV[7] rtt_us     ARGV[8] process hash TTL (s)   ARGV[9] liveness TTL (ms)
-- ARGV[10] health JSON (loops of the process)
-- ARGV[11..] pairs: thread id, work JSON
--
-- Returns {1 if the process hash existed before, signal or false, 1 if the liveness key
-- existed before (0: the process may have been taken for dead and its jobs recovered)}.
local existed = redis.call('EXISTS', KEYS[2])
local alive = redis.call('EXISTS', KEYS[6])
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[7], ARGV[1])
redis.call('HSET', KEYS[2], 'info', ARGV[2], 'busy', ARGV[3], 'beat', ARGV[4],
  'quiet', ARGV[5], 'rss', ARGV[6], 'rtt_us', ARGV[7], 'health', ARGV[10])
redis.call('EXPIRE', KEYS[2], ARGV[8])
redis.call('SET', KEYS[6], ARGV[4], 'PX', ARGV[9])
redis.call('UNLINK', KEYS[3], KEYS[4])
if #ARGV >= 11 then
  redis.call('HSET', KEYS[3], unpack(ARGV, 11))
  redis.call('HSET', KEYS[4], unpack(ARGV, 11))
  redis.call('EXPIRE', KEYS[3], ARGV[8])
  redis.call('EXPIRE', KEYS[4], ARGV[8])
end
local signal = redis.call('RPOP', KEYS[5])
return {existed, signal, alive}

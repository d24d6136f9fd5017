-- Finish a batch of executed jobs: take each out of the working list and, in the same step,
-- record where it goes next (nowhere, the retry set or the dead set), then count it.
-- A job missing from the working list was already recovered by another process (this one
-- was taken for dead); it is not added again, so recovery never duplicates a retry.
-- The call also publishes the process's start boundary (docs/reliability.md).
--
-- KEYS[1]  working list             KEYS[2]  retry (zset)        KEYS[3]  dead (zset)
-- KEYS[4]  stat:processed           KEYS[5]  stat:processed:<day>
-- KEYS[6]  stat:failed              KEYS[7]  stat:failed:<day>
-- KEYS[8]  start boundary of the process        KEYS[9]  trimmed-from-dead counter
-- ARGV[1]  TTL of the daily stat keys (seconds)
-- ARGV[2]  dead set maximum size    ARGV[3]  dead set cutoff score (older entries are dropped)
-- ARGV[4]  boundary: 'keep' (leave it), '' (no job unstarted) or the oldest unstarted payload
-- ARGV[5]  n, the number of jobs that succeeded; ARGV[6..5+n] their payloads as fetched
-- ARGV[6+n..] groups of 4 for the others: kind, payload as fetched, score, new payload
--           kind: 'fail' (failed, not kept), 'retry', 'dead',
--           'gone' (a middleware already moved it elsewhere: not counted)
--
-- Returns {jobs still in the working list, entries trimmed from dead, jid of each trimmed
-- entry (at most 100)...}.
local processed, failed, found, to_dead = 0, 0, 0, false
local succeeded = tonumber(ARGV[5])
for i = 6, 5 + succeeded do
  processed = processed + 1
  found = found + redis.call('LREM', KEYS[1], -1, ARGV[i])
end
for i = 6 + succeeded, #ARGV, 4 do
  local kind = ARGV[i]
  if kind ~= 'gone' then  -- every job here ran and did not succeed
    processed = processed + 1
    failed = failed + 1
  end
  if redis.call('LREM', KEYS[1], -1, ARGV[i + 1]) > 0 then
    found = found + 1
    if kind == 'retry' then
      redis.call('ZADD', KEYS[2], ARGV[i + 2], ARGV[i + 3])
    elseif kind == 'dead' then
      redis.call('ZADD', KEYS[3], ARGV[i + 2], ARGV[i + 3])
      to_dead = true
    end
  end
end
if ARGV[4] == '' then
  redis.call('DEL', KEYS[8])
elseif ARGV[4] ~= 'keep' then
  redis.call('SET', KEYS[8], ARGV[4])
end
local out = {found, 0}
if to_dead then
  -- Trim by age, then by size; each trimmed entry is counted and named by its jid.
  local gone = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[3], 'LIMIT', 0, 100)
  local n = redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[3])
  local over = redis.call('ZCARD', KEYS[3]) - tonumber(ARGV[2])
  if over > 0 then
    for _, m in ipairs(redis.call('ZRANGE', KEYS[3], 0, math.min(over, 100) - 1)) do
      gone[#gone + 1] = m
    end
    n = n + redis.call('ZREMRANGEBYRANK', KEYS[3], 0, over - 1)
  end
  if n > 0 then
    redis.call('INCRBY', KEYS[9], n)
    out[2] = n
    for j = 1, math.min(#gone, 100) do
      out[#out + 1] = string.match(gone[j], '"jid":"([%w_-]+)"') or '?'
    end
  end
end
if processed > 0 then
  redis.call('INCRBY', KEYS[4], processed)
  redis.call('INCRBY', KEYS[5], processed)
  redis.call('EXPIRE', KEYS[5], ARGV[1])
end
if failed > 0 then
  redis.call('INCRBY', KEYS[6], failed)
  redis.call('INCRBY', KEYS[7], failed)
  redis.call('EXPIRE', KEYS[7], ARGV[1])
end
return out

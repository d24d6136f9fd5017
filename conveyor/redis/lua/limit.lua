-- Per-class concurrency limit. Slots are members of a sorted set: 'identity|jid' for a running
-- job (freed when the process's liveness key expires, so a killed process gives its slots
-- back within the recovery bound) and '~|jid' for a slot reserved for a resumed job (freed when
-- its score, an expiry time, passes). Jobs over the limit wait in a list, oldest at the right.
--
-- KEYS[1]  running slots (zset)      KEYS[2]  deferred jobs (list)
-- KEYS[3]  working list of the calling process ('acquire') / queues set ('release', 'resume')
-- ARGV[1]  mode: 'acquire', 'release' or 'resume'
-- ARGV[2]  limit                     ARGV[3]  now (epoch seconds)
-- ARGV[4]  liveness key prefix (+ identity = liveness key)
-- acquire: ARGV[5] 'identity|jid'    ARGV[6] jid    ARGV[7] payload as fetched
--          Returns 1 (slot taken) or 0 (deferred: moved from the working list to the list).
-- release/resume: ARGV[5] member to free ('' for none)   ARGV[6] reservation expiry
--          ARGV[7] queue key prefix (+ queue name = queue list)
--          Returns the number of deferred jobs put back on their queues.
local now = tonumber(ARGV[3])

local function prune()
  local members = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
  for i = 1, #members, 2 do
    local owner = string.match(members[i], '^(.*)|')
    if owner == '~' then
      if tonumber(members[i + 1]) < now then redis.call('ZREM', KEYS[1], members[i]) end
    elseif not owner or redis.call('EXISTS', ARGV[4] .. owner) == 0 then
      redis.call('ZREM', KEYS[1], members[i])
    end
  end
end

local function has_room()
  return redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) and redis.call('LLEN', KEYS[2]) == 0
end

if ARGV[1] == 'acquire' then
  if redis.call('ZREM', KEYS[1], '~|' .. ARGV[6]) == 1 then
    redis.call('ZADD', KEYS[1], now, ARGV[5])
    return 1
  end
  -- Dead holders only matter when the slots look full: prune then, not on every call.
  if not has_room() then prune() end
  if has_room() then
    redis.call('ZADD', KEYS[1], now, ARGV[5])
    return 1
  end
  if redis.call('LREM', KEYS[3], -1, ARGV[7]) > 0 then
    redis.call('LPUSH', KEYS[2], ARGV[7])
  end
  return 0
end

if ARGV[5] ~= '' then redis.call('ZREM', KEYS[1], ARGV[5]) end
if redis.call('LLEN', KEYS[2]) == 0 then return 0 end
prune()
local free = tonumber(ARGV[2]) - redis.call('ZCARD', KEYS[1])
local resumed = {}
while #resumed < free do
  local raw = redis.call('RPOP', KEYS[2])
  if not raw then break end
  local ok, job = pcall(cjson.decode, raw)
  local queue = 'default'
  if ok and type(job) == 'table' then
    if type(job['queue']) == 'string' then queue = job['queue'] end
    if type(job['jid']) == 'string' then
      redis.call('ZADD', KEYS[1], ARGV[6], '~|' .. job['jid'])
    end
  end
  resumed[#resumed + 1] = {queue, raw}
end
-- Pushed newest first onto the consuming end, so the oldest is taken first.
for i = #resumed, 1, -1 do
  redis.call('RPUSH', ARGV[7] .. resumed[i][1], resumed[i][2])
  redis.call('SADD', KEYS[3], resumed[i][1])
end
return #resumed

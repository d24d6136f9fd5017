-- Per-class concurrency limit, for a batch of jobs grouped by class. Slots are members of a
-- sorted set: 'identity|tag' for a slot a live process holds (freed when the process's
-- liveness key expires, so a killed process gives its slots back within the recovery bound)
-- and '~|jid' for a slot reserved for a resumed job (freed when its score, an expiry time,
-- passes). A process keeps the slots its finished jobs used for its next jobs of the class
-- (conveyor/features/concurrency.py): the tag names a slot, not a job. Jobs over the limit wait
-- in a list, oldest at the right. The jobs of a group are handled in order.
--
-- ARGV[1]  mode: 'acquire', 'release' (a release of no member only resumes) or 'tend'
-- ARGV[2]  now (epoch seconds)       ARGV[3]  liveness key prefix (+ identity = liveness key)
--
-- acquire: KEYS per group g: running slots (zset), deferred jobs (list), working list of the
--          calling process. ARGV[4..] per group: limit, n, then n jids, then the n payloads
--          as fetched, then the n slot members to add.
--          Returns per job, groups in order, 1 (slot taken), 2 (slot taken, and slots are
--          scarce: it was the last free one, or the slot was reserved for a resumed job and
--          others still wait) or 0 (deferred: moved from the working list to the deferred
--          list in this same step).
-- release: KEYS[1] queues (set); per group g: running slots (zset), deferred jobs (list).
--          ARGV[4] reservation expiry   ARGV[5] queue key prefix (+ queue name = queue list)
--          ARGV[6..] per group: limit, n, then n members to free.
--          Returns the number of deferred jobs put back on their queues.
-- tend:    release, and says which classes had jobs waiting (before the resume).
--          Returns {resumed, then per group 1 if jobs waited, else 0}.
local now = tonumber(ARGV[2])

local function prune(running)
  local members = redis.call('ZRANGE', running, 0, -1, 'WITHSCORES')
  for i = 1, #members, 2 do
    local owner = string.match(members[i], '^(.*)|')
    if owner == '~' then
      if tonumber(members[i + 1]) < now then redis.call('ZREM', running, members[i]) end
    elseif not owner or redis.call('EXISTS', ARGV[3] .. owner) == 0 then
      redis.call('ZREM', running, members[i])
    end
  end
end

local function has_room(running, deferred, limit)
  return redis.call('ZCARD', running) < limit and redis.call('LLEN', deferred) == 0
end

local function taken(running, limit, member)
  redis.call('ZADD', running, now, member)
  if redis.call('ZCARD', running) >= limit then return 2 end
  return 1
end

local function acquire(running, deferred, working, limit, member, jid, raw)
  if redis.call('ZREM', running, '~|' .. jid) == 1 then
    redis.call('ZADD', running, now, member)
    if redis.call('LLEN', deferred) > 0 then return 2 end
    return 1
  end
  -- Dead holders only matter when the slots look full: prune then, not on every call.
  if not has_room(running, deferred, limit) then prune(running) end
  if has_room(running, deferred, limit) then
    return taken(running, limit, member)
  end
  if redis.call('LREM', working, -1, raw) > 0 then
    redis.call('LPUSH', deferred, raw)
  end
  return 0
end

local function resume(running, deferred, queues, limit)
  if redis.call('LLEN', deferred) == 0 then return 0 end
  prune(running)
  local free = limit - redis.call('ZCARD', running)
  local resumed = {}
  while #resumed < free do
    local raw = redis.call('RPOP', deferred)
    if not raw then break end
    local ok, job = pcall(cjson.decode, raw)
    local queue = 'default'
    if ok and type(job) == 'table' then
      if type(job['queue']) == 'string' then queue = job['queue'] end
      if type(job['jid']) == 'string' then
        redis.call('ZADD', running, ARGV[4], '~|' .. job['jid'])
      end
    end
    resumed[#resumed + 1] = {queue, raw}
  end
  -- Pushed newest first onto the consuming end, so the oldest is taken first.
  for i = #resumed, 1, -1 do
    redis.call('RPUSH', ARGV[5] .. resumed[i][1], resumed[i][2])
    redis.call('SADD', queues, resumed[i][1])
  end
  return #resumed
end

if ARGV[1] == 'acquire' then
  local out = {}
  local a = 4
  for g = 0, #KEYS / 3 - 1 do
    local running, deferred, working = KEYS[3 * g + 1], KEYS[3 * g + 2], KEYS[3 * g + 3]
    local limit, n = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
    for i = 1, n do
      out[#out + 1] = acquire(running, deferred, working, limit, ARGV[a + 1 + 2 * n + i],
        ARGV[a + 1 + i], ARGV[a + 1 + n + i])
    end
    a = a + 2 + 3 * n
  end
  return out
end

local function free(running, members, first, n)
  for i = 0, n - 1, 1000 do  -- unpack's stack holds a few thousand values: in chunks
    redis.call('ZREM', running, unpack(members, first + i, first - 1 + math.min(n, i + 1000)))
  end
end

local out = {0}
local a = 6
for g = 0, (#KEYS - 1) / 2 - 1 do
  local running, deferred = KEYS[2 * g + 2], KEYS[2 * g + 3]
  local limit, n = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  out[#out + 1] = redis.call('LLEN', deferred) > 0 and 1 or 0
  free(running, ARGV, a + 2, n)
  out[1] = out[1] + resume(running, deferred, KEYS[1], limit)
  a = a + 2 + n
end
if ARGV[1] == 'tend' then return out end
return out[1]

-- Bulk operations (SPEC OPS-1, OPS-3): delete an operation's keys and take it off the registry;
-- optionally leave its final totals behind (for `conveyor ops watch`, and so a late scheduler
-- job does not start the operation again).
--
-- KEYS[1]  background_operation:{id}               (hash)
-- KEYS[2]  background_operation:{id}:failed_items  (list)
-- KEYS[3]  background_operation:{id}:batches       (set)
-- KEYS[4]  conveyor:background-operation-finished:{id}  (string, JSON totals)
-- KEYS[5]  conveyor:background-operations          (zset registry)
-- ARGV[1]  operation id
-- ARGV[2]  seconds to keep the final totals; 0 keeps nothing
-- ARGV[3]  now, epoch seconds (finished_at)
--
-- Returns 1 if the operation existed, else 0.
local existed = redis.call('EXISTS', KEYS[1])
if existed == 1 and tonumber(ARGV[2]) > 0 then
  local v = redis.call('HMGET', KEYS[1], 'operation_type', 'total_items', 'successful_items',
                       'failed_items', 'created_at', 'completed_at')
  local summary = cjson.encode({
    id = ARGV[1], operation_type = v[1] or '', total_items = v[2] or '0',
    successful_items = v[3] or '0', failed_items = v[4] or '0', created_at = v[5] or '',
    completed_at = v[6] or '', finished_at = ARGV[3],
  })
  redis.call('SET', KEYS[4], summary, 'EX', ARGV[2])
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('ZREM', KEYS[5], ARGV[1])
return existed

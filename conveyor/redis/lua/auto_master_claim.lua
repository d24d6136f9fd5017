-- Automation (issue #16): a node about to act as master of a workflow under a fence marks that
-- fence as its own. Two leases that are not shared (a file lease on each machine's local disk)
-- both hand out fence 1: the second node finds the mark and refuses to act.
--
-- KEYS[1]  conveyor:automation:master:{workflow}:{fence}  (node id; expires with the term)
-- KEYS[2]  conveyor:automation:metrics:{workflow}         (master_changes, master_conflicts)
-- ARGV[1]  node id   ARGV[2] milliseconds the mark lives (the term)
--
-- Returns the node the fence belongs to: ARGV[1] (a new mark counts as a master change; an
-- own mark is renewed) or another node (a conflict, counted).
local holder = redis.call('GET', KEYS[1])
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  redis.call('HINCRBY', KEYS[2], 'master_changes', 1)
  return ARGV[1]
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return holder
end
redis.call('HINCRBY', KEYS[2], 'master_conflicts', 1)
return holder

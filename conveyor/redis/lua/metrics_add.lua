-- Add one batch of metric increments to the cluster-wide metrics hash, all at once, so a
-- scrape never sees a histogram's count without its buckets (conveyor.metrics).
--
-- KEYS[1]  metrics hash: series field -> cumulative value
-- ARGV     triples: field, kind ("i": integer count, "f": float sum), amount
--
-- Returns the number of fields changed.
for i = 1, #ARGV, 3 do
  if ARGV[i + 1] == 'f' then
    redis.call('HINCRBYFLOAT', KEYS[1], ARGV[i], ARGV[i + 2])
  else
    redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 2])
  end
end
return math.floor(#ARGV / 3)

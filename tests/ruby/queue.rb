# frozen_string_literal: true

# Reads one queue of the Redis in REDIS_URL through Sidekiq's own data API and prints JSON, for
# tests/system/test_stores.py (a store is a complete Sidekiq keyspace).
#
#   ruby queue.rb NAME      size, jobs by class, jids, args, and the Stats' enqueued total

require "json"
require "sidekiq/api"

Redis.silence_deprecations = true if Redis.respond_to?(:silence_deprecations=)

queue = Sidekiq::Queue.new(ARGV.fetch(0))
jobs = queue.to_a
puts JSON.generate(
  "size" => queue.size,
  "classes" => jobs.map(&:klass).tally,
  "jids" => jobs.map(&:jid),
  "args" => jobs.map(&:args),
  "enqueued" => Sidekiq::Stats.new.enqueued,
  "queues" => Sidekiq::Queue.all.map(&:name)
)

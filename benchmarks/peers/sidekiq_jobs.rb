# frozen_string_literal: true

# Ruby Sidekiq 6.4 as a peer of benchmarks/peers.py: the workloads of peer_common.py as Sidekiq
# jobs, with the same markers in Redis, and the same two commands:
#
#   ruby sidekiq_main.rb enqueue KIND N   # prints {"seconds": ...}; noop/sleep use push_bulk
#   ruby sidekiq_main.rb worker [ARGS]    # Sidekiq::CLI with this file required, -c 10
#
# Redis: BENCH_REDIS_URL (also handed to Sidekiq as REDIS_URL); latency pacing: BENCH_RATE.

require "json"
require "sidekiq"

ENV["REDIS_URL"] ||= ENV.fetch("BENCH_REDIS_URL")
Redis.silence_deprecations = true if Redis.respond_to?(:silence_deprecations=)

# peer_common.noop: index 0 and the final marker -1 record when they ran.
class PeerNoop
  include Sidekiq::Worker
  sidekiq_options queue: "bench"

  def perform(index)
    return unless index.zero? || index == -1

    Sidekiq.redis { |conn| conn.set(index.zero? ? "bench:first" : "bench:last", Time.now.to_f) }
  end
end

# peer_common.sleep: 10 ms, then INCR; the first and the last completion record the time.
class PeerSleep
  include Sidekiq::Worker
  sidekiq_options queue: "bench"

  def perform(total)
    sleep 0.010
    done = Sidekiq.redis { |conn| conn.incr("bench:done") }
    return unless done == 1 || done == total

    Sidekiq.redis { |conn| conn.set(done == 1 ? "bench:first" : "bench:last", Time.now.to_f) }
  end
end

# peer_common.incr, the I/O workload: one INCR on the job's own connection (one per thread, as
# redis-py's pool gives each Python thread its own), not on Sidekiq's pool.
class PeerIncr
  include Sidekiq::Worker
  sidekiq_options queue: "bench"

  def perform(_total)
    (Thread.current[:bench_redis] ||= Redis.new(url: ENV.fetch("BENCH_REDIS_URL"))).incr("bench:done")
  end
end

# peer_common.latency: how long ago the producer sent it.
class PeerLatency
  include Sidekiq::Worker
  sidekiq_options queue: "bench"

  def perform(sent)
    Sidekiq.redis { |conn| conn.rpush("bench:latency", Time.now.to_f - sent) }
  end
end

# Conveyor logs nothing per job; Sidekiq's two INFO lines per job would be extra work. Set here,
# not in configure_server: sidekiq_main.rb requires this file before Sidekiq::CLI exists, when
# configure_server blocks are skipped (so every job was logged until 2026-12-05).
Sidekiq.logger.level = Logger::WARN


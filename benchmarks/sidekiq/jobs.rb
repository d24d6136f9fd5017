# frozen_string_literal: true

# The Sidekiq side of benchmarks/core.py: the same two jobs as benchmarks/conveyor_jobs.py, with
# the same wire names, so both engines do the same work.

require "json"
require "sidekiq"

Redis.silence_deprecations = true if Redis.respond_to?(:silence_deprecations=)

# A no-op job whose only effect is one INCR, by which the harness counts completions.
class BenchNoop
  include Sidekiq::Worker

  def perform(_index)
    Sidekiq.redis { |conn| conn.incr("bench:done") }
  end
end

# A true no-op, except that the first (index 0) and the final marker (index -1) record when they
# ran, so the harness times a drain with no per-job side effect.
class BenchSilent
  include Sidekiq::Worker

  def perform(index)
    return unless index.zero? || index == -1

    key = index.zero? ? "bench:silent:first" : "bench:silent:last"
    Sidekiq.redis { |conn| conn.set(key, Time.now.to_f) }
  end
end

# Records how long ago the producer sent it (seconds), for the latency percentiles.
class BenchLatency
  include Sidekiq::Worker

  def perform(sent)
    Sidekiq.redis { |conn| conn.rpush("bench:latency", Time.now.to_f - sent) }
  end
end

Sidekiq.configure_server do |_config|
  # Conveyor logs nothing per job; Sidekiq's two INFO lines per job would be extra work.
  Sidekiq.logger.level = Logger::WARN
end

# frozen_string_literal: true

# Ruby side of the Sidekiq interop tests (tests/test_sidekiq_interop.py).
#
# Loaded by the Sidekiq server (tests/ruby/server.rb) and by the producer script (push.rb).
# Every job records what it saw by RPUSHing one JSON line onto "interop:ran", so the Python tests
# observe the effect directly in Redis instead of trusting either engine's counters.
#
# The server's scheduled-set poller is gated by the Redis key "interop:ruby-poller": unless a test
# sets it to "on", only Conveyor's poller promotes due jobs, so a test knows which engine did it.

require "json"
require "sidekiq"

# redis-rb 4.8 warns about its 5.0 API on every SADD Sidekiq 6.4 sends; keep the logs readable.
Redis.silence_deprecations = true if Redis.respond_to?(:silence_deprecations=)

module Interop
  RAN_KEY = "interop:ran"

  # Server middleware: keep the payload as Ruby parsed it, so a job can report it.
  class RememberPayload
    def call(_worker, job, _queue)
      Thread.current[:interop_job] = job
      yield
    ensure
      Thread.current[:interop_job] = nil
    end
  end

  def self.record(worker, args, extra = {})
    job = Thread.current[:interop_job] || {}
    line = {
      "runtime" => "ruby",
      "class" => worker.class.name,
      "jid" => worker.jid,
      "args" => args,
      "queue" => job["queue"],
      "pid" => ::Process.pid,
      "at" => Time.now.to_f,
      "payload" => job
    }.merge(extra)
    Sidekiq.redis { |conn| conn.rpush(RAN_KEY, JSON.generate(line)) }
  end
end

# Records its arguments; Conveyor pushes it by name (class "RubyRecorder", queue "ruby").
class RubyRecorder
  include Sidekiq::Worker
  sidekiq_options queue: "ruby"

  def perform(*args)
    Interop.record(self, args)
  end
end

# Fails until the key "interop:allow:<token>" exists, then records its arguments.
class FlakyRuby
  include Sidekiq::Worker
  sidekiq_options queue: "ruby", retry: 3, backtrace: 5

  class NotYet < StandardError; end

  def perform(token)
    allowed = Sidekiq.redis { |conn| conn.get("interop:allow:#{token}") }
    Interop.record(self, [token], "ok" => !allowed.nil?)
    raise NotYet, "not allowed yet: #{token} ✗" unless allowed
  end
end

# Runs until the test pushes onto "interop:release:<token>" (at most 20 s).
class RubyBlocker
  include Sidekiq::Worker
  sidekiq_options queue: "ruby"

  def perform(token)
    Interop.record(self, [token], "phase" => "started")
    Sidekiq.redis { |conn| conn.blpop("interop:release:#{token}", timeout: 20) }
    Interop.record(self, [token], "phase" => "done")
  end
end

# A job Conveyor fails and hands over to Ruby through retry_queue "ruby".
class Handoff
  include Sidekiq::Worker
  sidekiq_options queue: "ruby"

  def perform(*args)
    Interop.record(self, args)
  end
end

# Implemented by both engines and consumed from the same queue by both.
class Shared
  include Sidekiq::Worker
  sidekiq_options queue: "shared"

  def perform(index)
    sleep 0.02
    Interop.record(self, [index])
  end
end

Sidekiq.configure_server do |config|
  require "sidekiq/scheduled"

  gated = Class.new(Sidekiq::Scheduled::Enq) do
    def enqueue_jobs(*args)
      on = Sidekiq.redis { |conn| conn.get("interop:ruby-poller") } == "on"
      return unless on

      Sidekiq.redis { |conn| conn.incr("interop:ruby-poller:runs") }
      super
    end
  end
  config.options[:scheduled_enq] = gated
  config.options[:poll_interval_average] = 1

  config.server_middleware { |chain| chain.add(Interop::RememberPayload) }

  ready = ENV["INTEROP_READY_FILE"]
  config.on(:startup) { File.write(ready, ::Process.pid.to_s) } if ready
end

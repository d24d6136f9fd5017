# frozen_string_literal: true

# The entry point of the Sidekiq peer (see sidekiq_jobs.rb): enqueue KIND N | worker.

require_relative "sidekiq_jobs"

BATCH = 1000

def enqueue(kind, jobs)
  Sidekiq.redis(&:ping)
  now = -> { Process.clock_gettime(Process::CLOCK_MONOTONIC) }
  started = now.call
  if kind == "latency"
    interval = 1.0 / Float(ENV.fetch("BENCH_RATE"))
    jobs.times do |i|
      delay = started + (i * interval) - now.call
      sleep delay if delay.positive?
      PeerLatency.perform_async(Time.now.to_f)
    end
  else
    klass = { "sleep" => PeerSleep, "incr" => PeerIncr }.fetch(kind, PeerNoop)
    args = klass == PeerNoop ? (0...(jobs - 1)).map { |i| [i] } + [[-1]] : [[jobs]] * jobs
    started = now.call
    args.each_slice(BATCH) { |slice| Sidekiq::Client.push_bulk("class" => klass, "args" => slice) }
  end
  puts JSON.generate("seconds" => now.call - started)
end

case ARGV.shift
when "enqueue" then enqueue(ARGV.fetch(0), Integer(ARGV.fetch(1)))
when "worker"
  require "sidekiq/cli"
  cli = Sidekiq::CLI.instance
  threads = ENV.fetch("BENCH_CONCURRENCY", "10")
  cli.parse(["-r", File.expand_path("sidekiq_jobs.rb", __dir__), "-c", threads, "-q", "bench", *ARGV])
  cli.run
else
  abort "usage: ruby sidekiq_main.rb enqueue KIND N | worker"
end

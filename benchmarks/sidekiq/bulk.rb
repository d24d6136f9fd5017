# frozen_string_literal: true

# Pushes N BenchNoop jobs with Sidekiq::Client.push_bulk, 1000 per call, and prints the seconds
# it took as JSON (Ruby's boot is not counted). Usage: ruby bulk.rb N [BATCH]. Redis: REDIS_URL.

require_relative "jobs"

count = Integer(ARGV.fetch(0))
batch = Integer(ARGV.fetch(1, "1000"))
args = (0...count).map { |i| [i] }
Sidekiq.redis(&:ping) # connect before the clock starts, as the Python side does

started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
args.each_slice(batch) do |slice|
  Sidekiq::Client.push_bulk("class" => BenchNoop, "args" => slice)
end
elapsed = Process.clock_gettime(Process::CLOCK_MONOTONIC) - started
puts JSON.generate("seconds" => elapsed, "jobs" => count)

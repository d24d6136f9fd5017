# frozen_string_literal: true

# Pushes N BenchNoop (or CLASS) jobs with Sidekiq::Client.push_bulk, 1000 per call, and prints the
# seconds it took as JSON (Ruby's boot is not counted). Usage: ruby bulk.rb N [BATCH] [CLASS].

require_relative "jobs"

count = Integer(ARGV.fetch(0))
batch = Integer(ARGV.fetch(1, "1000"))
klass = Object.const_get(ARGV.fetch(2, "BenchNoop"))
# BenchSilent runs get a final marker job (index -1) in place of the last index.
args = (0...count).map { |i| [klass == BenchSilent && i == count - 1 ? -1 : i] }
Sidekiq.redis(&:ping) # connect before the clock starts, as the Python side does

started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
args.each_slice(batch) do |slice|
  Sidekiq::Client.push_bulk("class" => klass, "args" => slice)
end
elapsed = Process.clock_gettime(Process::CLOCK_MONOTONIC) - started
puts JSON.generate("seconds" => elapsed, "jobs" => count)

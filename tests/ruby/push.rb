# frozen_string_literal: true

# Pushes jobs the way a Ruby application does and prints their jids as JSON, for
# tests/test_sidekiq_interop.py. Redis comes from REDIS_URL (plus INTEROP_NAMESPACE, which needs
# the redis-namespace gem).
#
#   ruby push.rb hardworker            Client.push, perform_async and perform_in(1) of HardWorker
#   ruby push.rb raw JSON              Sidekiq::Client.push of each item of a JSON array
#   ruby push.rb flaky TOKEN           FlakyRuby.perform_async(TOKEN)

require "json"
require "sidekiq"
require_relative "workers"

if ENV["INTEROP_NAMESPACE"]
  Sidekiq.configure_client do |config|
    config.redis = {url: ENV["REDIS_URL"], namespace: ENV["INTEROP_NAMESPACE"]}
  end
end

# Values a Ruby app passes; tests/test_sidekiq_interop.py expects exactly these back (RUBY_ARGS).
ARGS = [
  "plain string",
  42,
  -7,
  2**53 + 1,
  3.25,
  {"nested" => {"list" => [1, "two", nil, true, false], "ratio" => 0.5}, "empty" => {}},
  "unicode: héllo wörld, 日本語, emoji 🚀, quote \" and backslash \\",
  [],
  nil
].freeze

# The Ruby app's view of a job that runs in Python: only the name and options matter here.
class HardWorker
  include Sidekiq::Worker

  def perform(*)
    raise "HardWorker runs in Conveyor (Python), not in Ruby"
  end
end

command, *rest = ARGV
result =
  case command
  when "hardworker"
    {
      "client_push" => Sidekiq::Client.push("class" => "HardWorker", "args" => ARGS),
      "perform_async" => HardWorker.perform_async(*ARGS),
      "perform_in" => HardWorker.perform_in(1, *ARGS)
    }
  when "raw" then {"jids" => JSON.parse(rest.fetch(0)).map { |item| Sidekiq::Client.push(item) }}
  when "flaky" then {"jid" => FlakyRuby.perform_async(rest.fetch(0))}
  else abort "usage: ruby push.rb hardworker | raw JSON | flaky TOKEN"
  end
puts JSON.generate(result)

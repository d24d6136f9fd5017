# frozen_string_literal: true

# Boots a Sidekiq server (the same Sidekiq::CLI the `sidekiq` executable runs) with the benchmark
# jobs loaded. Extra arguments are sidekiq's own, e.g. `-c 10 -q default`. Redis: REDIS_URL.

require "sidekiq/cli"

cli = Sidekiq::CLI.instance
cli.parse(["-r", File.expand_path("jobs.rb", __dir__), *ARGV])
cli.run

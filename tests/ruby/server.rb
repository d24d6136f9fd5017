# frozen_string_literal: true

# Boots a real Sidekiq server (the same Sidekiq::CLI the `sidekiq` executable runs) with the
# interop workers loaded. Extra arguments are sidekiq's own, e.g. `-q ruby -c 5 -t 5`.
# Redis comes from REDIS_URL.

require "sidekiq/cli"

cli = Sidekiq::CLI.instance
cli.parse(["-r", File.expand_path("workers.rb", __dir__), *ARGV])
cli.run

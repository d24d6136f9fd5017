# frozen_string_literal: true

# Reads and drives a Redis shared with Conveyor through Sidekiq's own data API (sidekiq/api) and
# prints one JSON document, for tests/test_sidekiq_interop.py. Redis comes from REDIS_URL.
#
#   ruby api.rb snapshot                     Stats, History, ProcessSet, Workers, the sets, queues
#   ruby api.rb retry|kill|delete SET JID    act on one entry of "retry", "dead" or "schedule"
#   ruby api.rb reschedule SET JID EPOCH     SortedEntry#reschedule
#   ruby api.rb quiet|stop IDENTITY          Sidekiq::Process#quiet! / #stop!

require "json"
require "sidekiq/api"

Redis.silence_deprecations = true if Redis.respond_to?(:silence_deprecations=)

SETS = {
  "retry" => Sidekiq::RetrySet,
  "dead" => Sidekiq::DeadSet,
  "schedule" => Sidekiq::ScheduledSet
}.freeze

def entry_doc(entry)
  {
    "jid" => entry.jid,
    "klass" => entry.klass,
    "display_class" => entry.display_class,
    "args" => entry.args,
    "queue" => entry.queue,
    "at" => entry.at.to_f,
    "score" => entry.score,
    "error" => entry.error?,
    "error_class" => entry["error_class"],
    "error_message" => entry["error_message"],
    "retry_count" => entry["retry_count"],
    "failed_at" => entry["failed_at"],
    "error_backtrace" => entry.error_backtrace,
    "created_at" => entry.created_at.to_f,
    "item" => entry.item
  }
end

def process_doc(process)
  keys = %w[identity hostname pid tag concurrency queues labels busy beat quiet rss started_at]
  keys.to_h { |k| [k, process[k]] }.merge("stopping" => process.stopping?)
end

def queue_doc(queue)
  jobs = queue.map do |job|
    {"jid" => job.jid, "klass" => job.klass, "args" => job.args,
     "enqueued_at" => job.enqueued_at&.to_f, "created_at" => job.created_at.to_f}
  end
  {"name" => queue.name, "size" => queue.size, "latency" => queue.latency, "jobs" => jobs}
end

def snapshot
  stats = Sidekiq::Stats.new
  history = Sidekiq::Stats::History.new(1)
  {
    "stats" => {
      "processed" => stats.processed, "failed" => stats.failed,
      "scheduled_size" => stats.scheduled_size, "retry_size" => stats.retry_size,
      "dead_size" => stats.dead_size, "enqueued" => stats.enqueued,
      "processes_size" => stats.processes_size, "workers_size" => stats.workers_size,
      "queues" => stats.queues
    },
    "history" => {"processed" => history.processed, "failed" => history.failed},
    "processes" => Sidekiq::ProcessSet.new.map { |p| process_doc(p) },
    "workers" => Sidekiq::Workers.new.map { |process, thread, work|
      {"process" => process, "thread" => thread, "queue" => work["queue"],
       "run_at" => work["run_at"], "payload" => work["payload"]}
    },
    "retry" => Sidekiq::RetrySet.new.map { |e| entry_doc(e) },
    "dead" => Sidekiq::DeadSet.new.map { |e| entry_doc(e) },
    "schedule" => Sidekiq::ScheduledSet.new.map { |e| entry_doc(e) },
    "queues" => Sidekiq::Queue.all.map { |q| queue_doc(q) }
  }
end

def find_entry(set_name, jid)
  set = SETS.fetch(set_name) { abort "unknown set #{set_name.inspect}; use #{SETS.keys.join(", ")}" }
  set.new.find_job(jid) or abort "no job #{jid} in #{set_name}"
end

def find_process(identity)
  Sidekiq::ProcessSet.new.find { |p| p.identity == identity } or
    abort "no process #{identity} in Sidekiq::ProcessSet"
end

command, *rest = ARGV
result =
  case command
  when "snapshot" then snapshot
  when "retry", "kill", "delete"
    entry = find_entry(*rest.first(2))
    entry.public_send(command)
    {"done" => command, "jid" => entry.jid}
  when "reschedule"
    entry = find_entry(*rest.first(2))
    entry.reschedule(Float(rest[2]))
    {"done" => command, "jid" => entry.jid}
  when "quiet" then find_process(rest[0]).quiet! && {"done" => command}
  when "stop" then find_process(rest[0]).stop! && {"done" => command}
  else abort "usage: ruby api.rb snapshot | retry|kill|delete SET JID | reschedule SET JID EPOCH | quiet|stop IDENTITY"
  end
puts JSON.generate(result)

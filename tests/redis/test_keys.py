"""Every key name (conveyor.redis.keys): Sidekiq's own names, unchanged, so a Ruby Sidekiq
shares the Redis; Conveyor-only keys under ``conveyor:``; a prefix like redis-namespace's."""

from __future__ import annotations

import inspect

from conveyor.redis.keys import Keys, glob_escape


def test_sidekiq_keys_keep_sidekiqs_names() -> None:
    k = Keys()
    assert (k.queues, k.queue("mail"), k.schedule, k.retry, k.dead, k.processes) == (
        "queues",
        "queue:mail",
        "schedule",
        "retry",
        "dead",
        "processes",
    )
    assert k.stat("processed") == "stat:processed"
    assert k.stat_daily("failed", "2026-12-05") == "stat:failed:2026-12-05"
    identity = "host:42:abc"
    assert (k.process(identity), k.work(identity), k.workers(identity)) == (
        "host:42:abc",
        "host:42:abc:work",
        "host:42:abc:workers",
    )
    assert k.signals(identity) == "host:42:abc-signals"
    assert k.queue_name(k.queue("a:b")) == "a:b"


def test_a_prefix_is_a_namespace_like_redis_namespace() -> None:
    assert Keys("myapp").queue("default") == "myapp:queue:default"
    assert Keys("myapp:").queue("default") == "myapp:queue:default", "one colon, not two"
    assert Keys("myapp").queue_name("myapp:queue:x") == "x"
    assert Keys("my*app").namespace_pattern() == "my\\*app:*"
    assert Keys().namespace_pattern() == "*"


def test_every_conveyor_only_key_lives_under_conveyor_or_a_sidekiq_name() -> None:
    k = Keys()
    sidekiq = {"queues", "schedule", "retry", "dead", "processes", "interrupted"}
    for name, member in inspect.getmembers(Keys):
        if name.startswith("_") or name in ("prefix", "namespace_pattern", "queue_name"):
            continue
        if isinstance(member, property):
            key = getattr(k, name)
        else:
            params = inspect.signature(member).parameters
            key = member(k, *(["x"] * (len(params) - 1)))
        ok = key in sidekiq or key.startswith(
            ("conveyor:", "queue:", "stat:", "background_operation:", "x")
        )
        assert ok, f"Keys.{name} gives {key!r}: Conveyor-only keys belong under conveyor:"


def test_glob_escape_makes_a_name_match_itself() -> None:
    assert glob_escape("a*b?[c]\\") == "a\\*b\\?\\[c\\]\\\\"

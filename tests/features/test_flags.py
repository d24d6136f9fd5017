from __future__ import annotations

import pytest
import redis

from conveyor import App, ConfigurationError, NotFoundError
from conveyor.features.flags import Flags, actor_bucket


def test_boolean_flags_round_trip_through_redis(app: App, r: redis.Redis) -> None:
    flags = Flags(app, cache_ttl=0)
    assert not flags.enabled("new_billing")  # never set: off (one rule, docs/flags.md)
    flags.enable("new_billing", description="the new billing path")
    assert flags.enabled("new_billing")
    other = Flags(App(app.settings), cache_ttl=0)  # another process's view
    assert other.enabled("new_billing")
    flags.disable("new_billing")
    assert not other.enabled("new_billing")
    assert [(s.name, s.summary, s.description) for s in flags.all()] == [
        ("new_billing", "off", "the new billing path")
    ]
    flags.delete("new_billing")
    assert flags.get("new_billing") is None
    with pytest.raises(NotFoundError):
        flags.delete("new_billing")


def test_percentage_of_actors_is_stable_and_roughly_right(app: App) -> None:
    flags = Flags(app, cache_ttl=0)
    flags.set_percentage("search_v2", 25)
    on = [a for a in range(4000) if flags.enabled("search_v2", actor=a)]
    assert 0.22 < len(on) / 4000 < 0.28
    assert all(actor_bucket("search_v2", a) < 25 for a in on)
    assert not flags.enabled("search_v2")  # no actor: only an on-for-everyone flag counts
    flags.set_percentage("search_v2", 50)
    assert set(on) <= {a for a in range(4000) if flags.enabled("search_v2", actor=a)}


def test_bad_names_and_percentages_are_refused(app: App) -> None:
    flags = Flags(app)
    with pytest.raises(ConfigurationError, match="flag name 'New Billing'"):
        flags.enable("New Billing")
    with pytest.raises(ConfigurationError, match="0-100, got 101"):
        flags.set_percentage("x", 101)


def test_cache_is_cleared_by_local_writes(app: App) -> None:
    flags = Flags(app, cache_ttl=60)
    assert not flags.enabled("f")
    flags.enable("f")
    assert flags.enabled("f")


def test_gated_job_class_is_not_enqueued_while_its_flag_is_off(app: App, r: redis.Redis) -> None:
    @app.job(feature_flag="new_exporter")
    def export(i: int) -> None: ...

    result = export.perform_async(1)
    assert not result and result.dropped == "feature flag 'new_exporter' is off"
    assert r.llen("queue:default") == 0
    Flags.of(app).enable("new_exporter")
    assert export.perform_async(2)
    assert r.llen("queue:default") == 1


def test_the_gate_reads_flags_from_asyncio_too(app: App, r: redis.Redis) -> None:
    import asyncio

    @app.job(feature_flag="async_exporter")
    def export(i: int) -> None: ...

    async def main() -> tuple[bool, bool]:
        try:
            off = bool(await export.aperform_async(1))
            Flags.of(app).enable("async_exporter")
            on = bool(await export.aperform_async(2))
            return off, on
        finally:
            await app.aclose()

    assert asyncio.run(main()) == (False, True)
    assert r.llen("queue:default") == 1

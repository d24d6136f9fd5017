"""Job options validated once, at declaration and in .set(), with the same messages (issue 19)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import pytest
import redis

from conveyor import App, ConfigurationError, Job
from conveyor.errors import UnknownOptionError


def test_set_validates_values_with_the_declaration_messages(app: App, r: redis.Redis) -> None:
    @app.job()
    def report(project_id: int) -> None: ...

    bad = [
        ({"queue": 3}, 'report: queue=3 must be a non-empty string, e.g. queue="low"'),
        ({"retry": "5"}, "report: retry='5' must be True, False or a count >= 0"),
        ({"dead": "no"}, "report: dead='no' must be True or False"),
        ({"timeout": 0}, "report: timeout=0 must be a number of seconds > 0"),
        (
            {"tags": "urgent"},
            "report: tags='urgent' must be a list of strings, e.g. tags=['urgent']",
        ),
        ({"retry_queue": ""}, "report: retry_queue='' must be a non-empty string"),
    ]
    for options, message in bad:
        with pytest.raises(ConfigurationError) as at_set:
            report.set(**options)
        assert str(at_set.value).startswith(message), at_set.value

        def declare(options: dict[str, object] = options) -> None:
            @app.job(**options)
            def report(project_id: int) -> None: ...

        with pytest.raises(ConfigurationError) as at_declaration:
            declare()
        assert str(at_declaration.value) == str(at_set.value)
    with pytest.raises(UnknownOptionError, match="unknown job option"):
        report.set(queeu="low")
    assert r.llen("queue:default") == 0


def test_class_attributes_are_checked_too(app: App) -> None:
    class Bad(Job):
        queue = 3  # type: ignore[assignment]

        def perform(self) -> None: ...

    with pytest.raises(ConfigurationError, match="Bad: queue=3 must be a non-empty string"):
        app.register(Bad)


def test_timedeltas_wherever_seconds_are_taken(app: App) -> None:
    @app.job(timeout=dt.timedelta(minutes=2))
    def slow() -> None: ...

    assert slow.conveyor_options["timeout"] == 120.0
    assert slow.set(timeout=dt.timedelta(seconds=1.5)).options["timeout"] == 1.5


def test_enqueue_by_name_checks_options(app: App) -> None:
    with pytest.raises(ConfigurationError, match="queue=3"):
        app.enqueue("Ruby::Worker", 1, queue=3)
    with pytest.raises(ConfigurationError, match="queue=3"):
        asyncio.run(app.aenqueue("Ruby::Worker", 1, queue=3))


def test_wal_locations_are_accepted_by_set_and_reach_the_payload(app: App, r: redis.Redis) -> None:
    """Issue 19: WAL locations could only be attached by building a raw payload."""

    @app.job(idempotent=True)
    def refresh(project_id: int) -> None: ...

    first = refresh.set(wal_locations={"main": "0/D525E3A8"}).perform_async(1)
    twin = refresh.set(wal_locations={"main": "0/D525E3B0"}).perform_async(1)
    assert first and not twin
    job = json.loads(r.rpop("queue:default") or "")
    assert job["wal_locations"] == {"main": "0/D525E3A8"}
    cookie = r.hgetall(f"conveyor:dedup:{job['idempotency_key']}")
    assert cookie["wal:main"] == "0/D525E3B0"  # the newest LSN wins
    with pytest.raises(ConfigurationError, match="LSN such as '16/B374D848'"):
        refresh.set(wal_locations={"main": "yesterday"})
    with pytest.raises(UnknownOptionError):
        app.job(wal_locations={"main": "0/1"})(lambda: None)  # per enqueue only

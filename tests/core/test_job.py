"""Declaring jobs (conveyor.core.job): options from class attributes and the decorator, checked
at declaration with messages that name the bad value; enqueueing through a class; ServiceJob."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import redis

from conveyor import App, ConfigurationError, EnqueueResult, Job, UnknownOptionError
from conveyor.core.job import ServiceJob


def test_decorator_options_override_class_attributes(app: App) -> None:
    class Report(Job):
        queue = "low"
        retry = 3

        def perform(self) -> None: ...

    app.register(Report, retry=7)
    assert Report.conveyor_options["queue"] == "low"
    assert Report.conveyor_options["retry"] == 7
    assert Report.wire_name() == "Report"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"retry": -1}, "retry=-1 must be True, False or a count >= 0"),
        ({"queue": ""}, "queue='' must be a non-empty string"),
        ({"timeout": 0}, "timeout=0 must be a number of seconds > 0"),
        ({"max_retries_after_interruption": -2}, "must be an int >= -1"),
    ],
)
def test_bad_options_are_refused_at_declaration(
    app: App, options: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):

        @app.job(**options)
        def work() -> None: ...


def test_unknown_options_raise_unknown_option_error_everywhere(app: App) -> None:
    with pytest.raises(UnknownOptionError, match=r"unknown job option.*quue"):

        @app.job(quue="mail")
        def work() -> None: ...

    @app.job()
    def fine() -> None: ...

    with pytest.raises(UnknownOptionError, match=r"fine: unknown job option.*priority"):
        fine.set(priority=1).perform_async()


def test_enqueue_result_is_truthy_and_prints_as_the_jid(app: App, r: redis.Redis) -> None:
    @app.job(queue="mail")
    def welcome(user_id: int) -> None: ...

    result = welcome.perform_async(7)
    assert isinstance(result, EnqueueResult) and result and str(result) == result.jid
    payload = json.loads(r.lindex("queue:mail", 0))
    assert payload["class"] == "welcome" and payload["args"] == [7]


def test_perform_in_and_at_schedule(app: App, r: redis.Redis) -> None:
    @app.job()
    def later() -> None: ...

    now = app.clock.time()
    later.perform_in(dt.timedelta(minutes=5))
    later.perform_at(dt.datetime.fromtimestamp(now + 600, dt.UTC))
    scores = sorted(score for _, score in r.zrange("schedule", 0, -1, withscores=True))
    assert scores[0] == pytest.approx(now + 300, abs=5)
    assert scores[1] == pytest.approx(now + 600, abs=1)
    with pytest.raises(ConfigurationError, match="naive datetime"):
        later.perform_at(dt.datetime(2030, 1, 1))


def test_an_unregistered_class_says_how_to_register_it() -> None:
    class Loose(Job):
        def perform(self) -> None: ...

    with pytest.raises(ConfigurationError, match=r"use app.register\(Loose\)"):
        Loose.perform_async()


class Greeter:
    def __init__(self) -> None:
        self.greeted: list[str] = []

    def greet(self, name: str) -> None:
        self.greeted.append(name)


class GreetJob(ServiceJob[Greeter]):
    def perform(self, name: str) -> None:
        self.service.greet(name)


def test_service_jobs_are_bound_per_service(settings: object) -> None:
    first, second = Greeter(), Greeter()
    bound_first, bound_second = GreetJob.bind(first), GreetJob.bind(second)
    assert bound_first is not bound_second and issubclass(bound_first, GreetJob)
    job = bound_first.instantiate()
    assert isinstance(job, GreetJob)
    job.perform("ada")
    assert first.greeted == ["ada"] and second.greeted == []


def test_an_unbound_service_job_says_to_bind_it() -> None:
    with pytest.raises(ConfigurationError, match=r"GreetJob.bind\(service\)"):
        GreetJob().perform("ada")

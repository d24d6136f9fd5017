"""Executing one fetched job: outcomes for success, failure, BaseException, bad payloads."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator

import pytest

from conveyor import App, Job, Settings
from conveyor.core.payload import dumps
from conveyor.core.processor import Processor
from conveyor.redis import decode_raw


@pytest.fixture
def local_app() -> Iterator[App]:
    # The processor never touches Redis: a URL that is never connected to is enough.
    app = App(Settings(redis_url="redis://127.0.0.1:1/0"))
    yield app


def run(app: App, payload: str, queue: str = "default") -> tuple[str, dict[str, object]]:
    processor = Processor(app, identity="host:1:abc")
    outcome = processor.process(processor.fetched(queue, payload))
    return outcome.kind, json.loads(outcome.payload) if outcome.payload else {}


@pytest.mark.parametrize(
    "exc",
    [SystemExit(3), GeneratorExit(), KeyboardInterrupt()],
    ids=["SystemExit", "GeneratorExit", "KeyboardInterrupt"],
)
def test_a_base_exception_from_a_job_is_that_jobs_failure(
    local_app: App, exc: BaseException
) -> None:
    @local_app.job(name="Exits")
    class Exits(Job):
        def perform(self) -> None:
            raise exc

    kind, record = run(local_app, dumps({"class": "Exits", "args": [], "jid": "j1"}))
    assert kind == "retry"
    assert record["error_class"] == type(exc).__qualname__ and record["retry_count"] == 0


def test_keyboard_interrupt_at_shutdown_stops_the_job_instead(local_app: App) -> None:
    @local_app.job(name="Interrupted")
    class Interrupted(Job):
        def perform(self) -> None:
            raise KeyboardInterrupt

    processor = Processor(local_app)
    processor.stopping = True
    with pytest.raises(KeyboardInterrupt):
        processor.process(processor.fetched("default", dumps({"class": "Interrupted", "args": []})))


def test_a_lone_surrogate_in_the_error_message_is_stored_escaped(local_app: App) -> None:
    name = os.fsdecode(b"report-\xff.csv")

    @local_app.job(name="BadFile")
    class BadFile(Job):
        def perform(self) -> None:
            raise FileNotFoundError(name)

    processor = Processor(local_app)
    outcome = processor.process(
        processor.fetched("default", dumps({"class": "BadFile", "args": []}))
    )
    outcome.payload.encode("utf-8")  # what Redis would refuse before the fix
    assert json.loads(outcome.payload)["error_message"] == "report-\\udcff.csv"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ('{"class":"A","args":[NaN]}', "NaN is not a number"),
        ('{"class":"A","args":[1e999]}', "overflows"),
        ("[" * 100_000 + "]" * 100_000, "nested more than 100 levels"),
        ('{"class":"A","args":["\\udcff"]}', "lone UTF-16 surrogate"),
    ],
    ids=["nan", "1e999", "deep", "surrogate"],
)
def test_payloads_that_cannot_be_run_go_to_the_dead_set_with_a_reason(
    local_app: App, payload: str, reason: str
) -> None:
    kind, record = run(local_app, payload)
    assert kind == "dead"
    assert reason in str(record["error_message"]) and record["retry"] is False
    assert record["error_class"] == "conveyor.errors.PayloadError"


def test_invalid_utf8_is_kept_as_base64(local_app: App) -> None:
    raw = b'{"class":"A","args":["\xff\xfe"]}'
    kind, record = run(local_app, decode_raw(raw))
    assert kind == "dead" and "not valid UTF-8" in str(record["error_message"])
    assert base64.b64decode(str(record["raw_base64"])) == raw


def test_crashed_files_the_job_as_dead_with_the_reason(local_app: App) -> None:
    processor = Processor(local_app)
    unit = processor.fetched("default", dumps({"class": "A", "args": [1], "jid": "j9"}))
    outcome = processor.crashed(unit, TypeError("bug in a hook"))
    record = json.loads(outcome.payload)
    assert outcome.kind == "dead" and record["jid"] == "j9"
    assert "TypeError: bug in a hook" in record["error_message"]


def test_success_is_ok_and_never_touches_the_payload(local_app: App) -> None:
    seen: list[object] = []

    @local_app.job(name="Fine")
    class Fine(Job):
        def perform(self, x: int) -> None:
            seen.append(x)

    raw = dumps({"class": "Fine", "args": [5]})
    processor = Processor(local_app)
    outcome = processor.process(processor.fetched("default", raw))
    assert (outcome.kind, outcome.raw, seen) == ("ok", raw, [5])

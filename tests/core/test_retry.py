from __future__ import annotations

import datetime as dt
import random

import pytest

from conveyor import Job, Settings, UnknownJobClassError
from conveyor.core.retry import decide, decompress_backtrace, default_backoff

S = Settings(redis_url="redis://localhost:1/0")


def boom() -> ValueError:
    try:
        raise ValueError("x" * 20_000)
    except ValueError as exc:
        return exc


def test_default_backoff_is_count4_plus_15_plus_jitter() -> None:
    rng = random.Random(1)
    for count in range(25):
        samples = [default_backoff(count, rng) for _ in range(300)]
        assert min(samples) >= count**4 + 15
        assert max(samples) < count**4 + 15 + 10 * (count + 1)
        assert len(set(samples)) > 1


def test_first_failure_then_retries_record_sidekiq_fields() -> None:
    job = {"class": "J", "args": [], "queue": "q", "retry": True, "jid": "a" * 24}
    d = decide(job, boom(), queue="q", now=100.0, settings=S, instance=None)
    assert d.kind == "retry" and 115 <= d.score < 125
    assert job["retry_count"] == 0 and job["failed_at"] == 100.0 and "retried_at" not in job
    assert job["error_class"] == "ValueError" and len(job["error_message"]) == 10_000
    d = decide(job, boom(), queue="q", now=200.0, settings=S, instance=None)
    assert job["retry_count"] == 1 and job["retried_at"] == 200.0 and job["failed_at"] == 100.0
    assert 200 + 16 <= d.score < 200 + 16 + 20


@pytest.mark.parametrize(
    ("retry", "count_before", "kind"),
    [
        (False, None, "discard"),
        (0, None, "dead"),
        (2, 0, "retry"),
        (2, 1, "dead"),
        (True, 23, "retry"),
        (True, 24, "dead"),
    ],
)
def test_retry_option_decides(retry: object, count_before: int | None, kind: str) -> None:
    job: dict[str, object] = {"class": "J", "args": [], "retry": retry}
    if count_before is not None:
        job["retry_count"] = count_before
    assert decide(job, boom(), queue="q", now=0.0, settings=S, instance=None).kind == kind


def test_dead_false_discards_when_exhausted() -> None:
    job = {"class": "J", "args": [], "retry": 0, "dead": False}
    assert decide(job, boom(), queue="q", now=0.0, settings=S, instance=None).kind == "discard"


def test_unknown_class_is_never_dropped() -> None:
    exc = UnknownJobClassError("no")
    for retry in (False, 0):
        job = {"class": "New", "args": [], "retry": retry, "dead": False}
        assert decide(job, exc, queue="q", now=0.0, settings=S, instance=None).kind == "retry"
    job = {"class": "New", "args": [], "retry": 1, "retry_count": 0, "dead": False}
    assert decide(job, exc, queue="q", now=0.0, settings=S, instance=None).kind == "dead"


class Hooked(Job):
    answer: object = None

    def retry_in(
        self, count: int, exc: BaseException, job: dict[str, object]
    ) -> float | str | None:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("answer", "kind", "score"),
    [(7, "retry", 7.0), ("kill", "dead", 0.0), ("discard", "discard", 0.0)],
)
def test_retry_in_hook(answer: object, kind: str, score: float) -> None:
    hooked = Hooked()
    hooked.answer = answer
    d = decide({"class": "J", "args": []}, boom(), queue="q", now=0.0, settings=S, instance=hooked)
    assert (d.kind, d.score) == (kind, score)


def test_broken_retry_in_hook_falls_back_to_default() -> None:
    hooked = Hooked()
    hooked.answer = RuntimeError("bug")
    d = decide({"class": "J", "args": []}, boom(), queue="q", now=0.0, settings=S, instance=hooked)
    assert d.kind == "retry" and 15 <= d.score < 25


def test_backtrace_is_compressed_like_sidekiq() -> None:
    job = {"class": "J", "args": [], "backtrace": 1}
    decide(job, boom(), queue="q", now=0.0, settings=S, instance=None)
    lines = decompress_backtrace(job["error_backtrace"])
    assert len(lines) == 1 and "in `boom'" in lines[0]


def test_retry_queue_overrides_queue() -> None:
    job = {"class": "J", "args": [], "queue": "a", "retry_queue": "slow"}
    decide(job, boom(), queue="a", now=0.0, settings=S, instance=None)
    assert job["queue"] == "slow"


@pytest.mark.parametrize(
    "answer",
    [dt.timedelta(seconds=30), "soon", float("nan"), float("inf"), True, [5]],
    ids=["timedelta", "junk-string", "nan", "inf", "bool", "list"],
)
def test_a_retry_in_hook_returning_the_wrong_type_falls_back_with_a_log_line(
    answer: object, caplog: pytest.LogCaptureFixture
) -> None:
    hooked = Hooked()
    hooked.answer = answer
    d = decide({"class": "J", "args": []}, boom(), queue="q", now=0.0, settings=S, instance=hooked)
    assert d.kind == "retry" and 15 <= d.score < 25  # the default backoff
    assert "retry_in returned" in caplog.text and "default backoff" in caplog.text

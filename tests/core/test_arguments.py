"""Arguments checked at enqueue against perform's signature (issue 19: errors arrive late)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis

from conveyor import App, Job
from conveyor.errors import EnqueueError


def test_missing_argument_is_refused_at_enqueue_naming_job_and_signature(
    app: App, r: redis.Redis
) -> None:
    @app.job()
    def add(a: int, b: int) -> int:
        return a + b

    with pytest.raises(EnqueueError) as caught:
        add.perform_async(1)
    message = str(caught.value)
    assert "add(a, b)" in message and "missing a required argument: 'b'" in message
    assert "check_args=False" in message
    with pytest.raises(EnqueueError, match="too many positional arguments"):
        add.perform_async(1, 2, 3)
    assert r.llen("queue:default") == 0 and r.zcard("schedule") == 0
    assert add.perform_async(1, 2)


def test_every_enqueue_path_checks(app: App, r: redis.Redis) -> None:
    @app.job()
    class Report(Job):
        def perform(self, project_id: int, kind: str = "full") -> None: ...

    with pytest.raises(EnqueueError, match=r"Report\(project_id, kind='full'\)"):
        Report.perform_in(60)
    with pytest.raises(EnqueueError, match="cannot run with 0 arguments"):
        Report.set(queue="low").perform_at(0)
    with pytest.raises(EnqueueError, match="cannot run with 3 arguments"):
        Report.bulk_perform_async([[1], [1, "x", "extra"]])
    with pytest.raises(EnqueueError, match="cannot run with 3 arguments"):
        app.enqueue("Report", 1, "x", "extra")
    with pytest.raises(EnqueueError, match="missing a required argument"):
        asyncio.run(Report.aperform_async())
    assert r.llen("queue:default") == 0  # nothing half-pushed by the bad bulk
    assert Report.perform_async(1) and Report.perform_async(1, "short")


def test_keyword_arguments_get_the_positional_hint(app: App) -> None:
    @app.job()
    def add(a: int, b: int) -> None: ...

    with pytest.raises(EnqueueError) as caught:
        add.perform_async(a=1)  # type: ignore[call-arg]
    message = str(caught.value)
    assert "positional JSON arguments" in message
    assert "add.perform_async({'a': ...})" in message
    with pytest.raises(EnqueueError, match="aperform_in got keyword argument"):
        asyncio.run(add.aperform_in(5, 1, b=2))


def test_check_args_false_for_dynamic_signatures_and_other_processes(
    app: App, r: redis.Redis
) -> None:
    @app.job(check_args=False)
    def ruby_side(*args: Any, **kwargs: Any) -> None: ...

    @app.job(check_args=False)
    def legacy(a: int) -> None: ...

    assert legacy.perform_async() and legacy.perform_async(1, 2)
    assert ruby_side.perform_async(1, 2, 3)
    # A class only another process knows has no signature here: nothing to check.
    assert app.enqueue("Ruby::Worker", 1, 2, 3)


def test_keyword_only_parameters_can_never_be_filled(app: App) -> None:
    @app.job()
    def needs(a: int, *, b: int) -> None: ...

    with pytest.raises(EnqueueError, match="missing a required argument: 'b'"):
        needs.perform_async(1)


def test_varargs_and_defaults_accept_what_perform_accepts(app: App, r: redis.Redis) -> None:
    @app.job()
    def many(first: int, *rest: int) -> None: ...

    @app.job()
    async def later(a: int, b: int = 2) -> None: ...

    assert many.perform_async(1) and many.perform_async(1, 2, 3, 4)
    assert later.perform_async(1) and later.perform_async(1, 3)
    with pytest.raises(EnqueueError):
        many.perform_async()

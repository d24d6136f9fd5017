from __future__ import annotations

import datetime as dt

import pytest
import redis

from conveyor import App, Job, SerializationError, Settings


@pytest.fixture
def offline_app() -> App:
    # No Redis at all: the testing modes must not need one.
    return App(Settings(redis_url="redis://127.0.0.1:1/0"))


def test_inline_runs_at_enqueue_and_raises_to_the_caller(offline_app: App) -> None:
    app = offline_app
    seen: list[int] = []

    @app.job()
    def add(i: int) -> None:
        if i < 0:
            raise ValueError("negative")
        seen.append(i)

    with app.testing.inline():
        add.perform_async(1)
        add.perform_in(60, 2)
        with pytest.raises(ValueError, match="negative"):
            add.perform_async(-1)
        with pytest.raises(SerializationError):
            add.perform_async(dt.date.today())
    assert seen == [1, 2]


def test_fake_collects_and_drains_including_jobs_enqueued_while_draining(offline_app: App) -> None:
    app = offline_app
    log: list[str] = []

    @app.job(queue="low")
    def child(name: str) -> None:
        log.append(f"child {name}")

    @app.job(name="Parent")
    class Parent(Job):
        def perform(self, n: int) -> None:
            log.append(f"parent {n}")
            child.perform_async(f"of {n}")

    with app.testing.fake():
        Parent.perform_async(1)
        Parent.perform_async(2)
        assert [j["args"] for j in app.testing.jobs(Parent)] == [[1], [2]]
        assert app.testing.jobs(queue="low") == []
        assert app.testing.drain(Parent) == 2
        assert len(app.testing.jobs("child")) == 2
        assert app.testing.drain() == 2
    assert log == ["parent 1", "parent 2", "child of 1", "child of 2"]


def test_fake_mode_does_not_touch_redis(app: App, r: redis.Redis) -> None:
    @app.job()
    def f() -> None: ...

    with app.testing.fake():
        f.perform_async()
    assert r.dbsize() == 0

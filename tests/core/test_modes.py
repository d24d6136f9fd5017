"""Which worker a process runs: conveyor/core/modes.py."""

from __future__ import annotations

import pytest

from conveyor import App, Job, Settings
from conveyor.core.aio_worker import AioWorker
from conveyor.core.modes import create_worker
from conveyor.core.worker import Worker
from conveyor.errors import ConfigurationError


def asyncio_app(app: App, **changes: object) -> App:
    app.configure(app.settings.replace(worker_mode="asyncio", **changes))
    return app


def test_mode_setting_picks_the_worker_and_a_bad_mode_is_named(
    app: App, settings: Settings
) -> None:
    assert isinstance(create_worker(asyncio_app(app)), AioWorker)
    threaded = App(settings)
    assert isinstance(create_worker(threaded), Worker)
    threaded.close()
    with pytest.raises(
        ConfigurationError, match="worker_mode must be auto, threads or asyncio, got 'gevent'"
    ):
        Settings(worker_mode="gevent")
    assert Settings.load(env={"CONVEYOR_WORKER_MODE": "asyncio"}).worker_mode == "asyncio"


def test_auto_mode_picks_asyncio_only_when_every_job_class_is_async_def(settings: Settings) -> None:
    assert Settings().worker_mode == "auto"
    app = App(settings.replace(worker_mode="auto"))
    try:
        assert isinstance(create_worker(app), Worker), "no job class yet: threads"

        @app.job
        async def fetch_page(url: str) -> None:
            pass

        @app.job(name="Notify")
        class Notify(Job):
            async def perform(self, user: int) -> None:
                pass

        assert isinstance(create_worker(app), AioWorker)

        @app.job
        def resize(path: str) -> None:
            pass

        assert isinstance(create_worker(app), Worker), "a plain job class: threads"
    finally:
        app.close()

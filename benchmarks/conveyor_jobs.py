"""The Conveyor side of benchmarks/core.py: the same jobs as benchmarks/sidekiq/jobs.rb, with the
same wire names, so both engines do the same work (plus their ``async def`` twins for the
asyncio worker mode).

``python -m benchmarks.conveyor_jobs`` runs one worker process (settings from ``CONVEYOR_*``).
"""

from __future__ import annotations

import os
import time

from conveyor import App, Job, Settings
from conveyor.core.modes import create_worker


def create_app(settings: Settings, *, only_async: bool = False) -> App:
    """The benchmark's jobs; ``only_async``: only the ``async def`` twins (an app that the
    default ``worker_mode=auto`` runs in asyncio mode)."""
    app = App(settings)
    if only_async:
        add_async_twins(app)
        return app

    @app.job(name="BenchNoop")
    class BenchNoop(Job):
        """A no-op job whose only effect is one INCR, by which the harness counts completions."""

        def perform(self, index: int) -> None:
            type(self).app.redis().incr("bench:done")

    @app.job(name="BenchSilent")
    class BenchSilent(Job):
        """A true no-op, except that the first (index 0) and the final marker (index -1) record
        when they ran, so the harness times a drain with no per-job side effect."""

        def perform(self, index: int) -> None:
            if index in (0, -1):
                key = "bench:silent:first" if index == 0 else "bench:silent:last"
                type(self).app.redis().set(key, time.time())

    @app.job(name="BenchLatency")
    class BenchLatency(Job):
        """Records how long ago the producer sent it (seconds)."""

        def perform(self, sent: float) -> None:
            type(self).app.redis().rpush("bench:latency", time.time() - sent)

    add_async_twins(app)
    return app


def add_async_twins(app: App) -> None:
    """``BenchNoopAsync``, ``BenchSilentAsync`` and ``BenchLatencyAsync``: the same jobs as
    ``async def`` on ``app.aredis()`` (redis.asyncio; in asyncio mode the slot's own
    connection), for the asyncio worker mode, as the sync jobs use ``app.redis()``."""

    @app.job(name="BenchNoopAsync")
    class BenchNoopAsync(Job):
        async def perform(self, index: int) -> None:
            await app.aredis().incr("bench:done")

    @app.job(name="BenchSilentAsync")
    class BenchSilentAsync(Job):
        async def perform(self, index: int) -> None:
            if index in (0, -1):
                key = "bench:silent:first" if index == 0 else "bench:silent:last"
                await app.aredis().set(key, time.time())

    @app.job(name="BenchLatencyAsync")
    class BenchLatencyAsync(Job):
        async def perform(self, sent: float) -> None:
            await app.aredis().rpush("bench:latency", time.time() - sent)


def main() -> None:
    # CONVEYOR_WORKER_MODE picks the worker (auto by default); BENCH_ONLY_ASYNC=1 registers only
    # the async def twins.
    only_async = os.environ.get("BENCH_ONLY_ASYNC") == "1"
    create_worker(create_app(Settings.load(), only_async=only_async)).run(install_signals=True)


if __name__ == "__main__":
    main()

"""The Conveyor side of benchmarks/core.py: the same two jobs as benchmarks/sidekiq/jobs.rb,
with the same wire names, so both engines do the same work.

``python -m benchmarks.conveyor_jobs`` runs one worker process (settings from ``CONVEYOR_*``).
"""

from __future__ import annotations

import time

from conveyor import App, Job, Settings, Worker


def create_app(settings: Settings) -> App:
    app = App(settings)

    @app.job(name="BenchNoop")
    class BenchNoop(Job):
        """A no-op job whose only effect is one INCR, by which the harness counts completions."""

        def perform(self, index: int) -> None:
            type(self).app.store.client.incr("bench:done")

    @app.job(name="BenchSilent")
    class BenchSilent(Job):
        """A true no-op, except that the first (index 0) and the final marker (index -1) record
        when they ran, so the harness times a drain with no per-job side effect."""

        def perform(self, index: int) -> None:
            if index in (0, -1):
                key = "bench:silent:first" if index == 0 else "bench:silent:last"
                type(self).app.store.client.set(key, time.time())

    @app.job(name="BenchLatency")
    class BenchLatency(Job):
        """Records how long ago the producer sent it (seconds)."""

        def perform(self, sent: float) -> None:
            type(self).app.store.client.rpush("bench:latency", time.time() - sent)

    return app


def main() -> None:
    Worker(create_app(Settings.load())).run(install_signals=True)


if __name__ == "__main__":
    main()

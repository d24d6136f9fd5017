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

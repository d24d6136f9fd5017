"""A worker process for the adversarial and chaos tests (tests/system/test_adversarial.py,
test_chaos.py): ``python tests/apps/reliability_app.py`` with CONVEYOR_* settings.

Jobs record what really ran in a *side* Redis (``SIDE_REDIS_URL``, default the worker's own),
which stays up while the worker's Redis is stopped or proxied, so tests count runs instead of
trusting the engine's counters."""

from __future__ import annotations

import os
import sys
import time

import redis

from conveyor import App, Job, Settings
from conveyor.core.modes import create_worker

app = App(Settings.load())
side = redis.Redis.from_url(
    os.environ.get("SIDE_REDIS_URL") or os.environ["CONVEYOR_REDIS_URL"], decode_responses=True
)


@app.job(name="Work")
class Work(Job):
    """Counts its runs; ``seconds`` of work (a no-op once ``fast`` is set)."""

    def perform(self, i: int, seconds: float = 0.0) -> None:
        count = self.job.get("interrupted_count", 0)
        side.rpush("starts", f"{i}:{os.getpid()}:{count}")
        if seconds and not side.exists("fast"):
            time.sleep(seconds)
        side.hincrby("done", str(i), 1)


@app.job(name="Tick")
class Tick(Job):
    """The chaos test's job: counts its runs after ``TICK_SECONDS`` of work."""

    def perform(self, i: int) -> None:
        time.sleep(float(os.environ.get("TICK_SECONDS", "0")))
        side.hincrby("ticks", str(i), 1)


@app.job(name="Poison")
class Poison(Job):
    """Kills the process running it, every time (a segfaulting C extension, an OOM kill)."""

    def perform(self) -> None:
        side.incr("poison-runs")
        os._exit(1)


if __name__ == "__main__":
    worker = create_worker(app)  # CONVEYOR_WORKER_MODE picks threads or asyncio
    side.rpush("identities", f"{os.getpid()}:{worker.identity}")
    try:
        worker.run()
    finally:
        app.close()
    sys.exit(worker.exit_code)

"""A worker process for crash tests: ``python tests/apps/crash_app.py`` with CONVEYOR_* settings.

Jobs record their own side effects in Redis (starts, completions), so tests count what really
ran instead of trusting the engine's counters.
"""

from __future__ import annotations

import os
import time

import redis

from conveyor import App, Job, Settings, Worker

app = App(Settings.load())
side = redis.Redis.from_url(os.environ["CONVEYOR_REDIS_URL"], decode_responses=True)


@app.job(name="Sleepy")
class Sleepy(Job):
    def perform(self, i: int, seconds: float) -> None:
        side.rpush("starts", f"{i}:{os.getpid()}:{time.time()}")
        if not side.exists("fast"):
            time.sleep(seconds)
        side.hincrby("completions", str(i), 1)


if __name__ == "__main__":
    Worker(app).run()

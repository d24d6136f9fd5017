"""Worker process for the hammer test: a cron entry firing every second and a class limited
to 3 concurrent jobs. Jobs record what they see in Redis themselves."""

from __future__ import annotations

import os
import time

import redis

from conveyor import App, Job, Settings, Worker
from conveyor.features.cron import schedule

app = App(Settings.load())
side = redis.Redis.from_url(os.environ["CONVEYOR_REDIS_URL"], decode_responses=True)

# Count jobs inside the limited section and keep the highest count seen, atomically.
ENTER = """
local now = redis.call('INCR', KEYS[1])
if now > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], now) end
return now
"""


@app.job(concurrency_limit=3)
def limited(i: int) -> None:
    side.eval(ENTER, 2, "limited:now", "limited:peak")
    time.sleep(0.01)
    side.decr("limited:now")
    side.sadd("limited:done", i)


@app.job(name="TickRecorder")
class TickRecorder(Job):
    def perform(self) -> None:
        side.rpush("ticks", str(self.job["cron_at"]))


schedule(app, "every-second", "* * * * * *", TickRecorder)

if __name__ == "__main__":
    Worker(app).run()

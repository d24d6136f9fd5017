"""Two releases of one app as real worker processes, for the rolling-deploy test:
``python tests/apps/compat/rolling.py old|new`` with CONVEYOR_* settings.

Release ``old`` (M-1): ``OldName``, ``ExampleWorker(object_id)``, ``Doomed(object_id)``.
Release ``new`` (M): ``NewName`` answering ``OldName`` (producers keep the old name until flag
``new_name`` is on), ``ExampleWorker(object_id, new_arg=None)``, ``Doomed`` deprecated.
Every run is recorded in the Redis list ``ran`` as ``release:class:jid:args`` (deprecated
no-ops as ``release:noop:...``), so the test counts what really happened.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import redis

from conveyor import App, Job, JobContext, ServerMiddleware, Settings, Worker
from conveyor.features.transitions import enqueue_as


class Record(ServerMiddleware):
    def __init__(self, release: str, side: redis.Redis) -> None:
        self.release = release
        self.side = side

    def after_perform(self, ctx: JobContext, error: BaseException | None) -> None:
        if ctx.skipped == "deprecated":
            self.side.rpush(
                "ran", f"{self.release}:noop:{ctx.job['jid']}:{json.dumps(ctx.job['args'])}"
            )


def build(release: str, settings: Settings) -> App:
    app = App(settings)
    side = redis.Redis.from_url(str(settings.redis_url), decode_responses=True)

    def record(job: Job, name: str, *args: Any) -> None:
        side.rpush("ran", f"{release}:{name}:{job.jid}:{json.dumps(list(args))}")

    if release == "old":

        @app.job(name="OldName")
        class OldName(Job):
            def perform(self, i: int) -> None:
                record(self, "OldName", i)

        @app.job(name="ExampleWorker")
        class Example(Job):
            def perform(self, object_id: int) -> None:
                record(self, "ExampleWorker", object_id)

        @app.job(name="Doomed")
        class Doomed(Job):
            def perform(self, object_id: int) -> None:
                record(self, "Doomed", object_id)

    else:

        @app.job(
            name="NewName", aliases=("OldName",), enqueue_as=enqueue_as("OldName", flag="new_name")
        )
        class NewName(Job):
            def perform(self, i: int) -> None:
                record(self, "NewName", i)

        @app.job(name="ExampleWorker")
        class Example2(Job):
            def perform(self, object_id: int, new_arg: str | None = None) -> None:
                record(self, "ExampleWorker", object_id, new_arg)

        @app.job(name="Doomed", deprecated=True)
        class Doomed2(Job):
            def perform(self, object_id: int) -> None:
                raise AssertionError("deprecated: must not run")

    app.server_middleware.prepend(Record(release, side))
    return app


if __name__ == "__main__":
    Worker(build(sys.argv[1], Settings.load())).run()

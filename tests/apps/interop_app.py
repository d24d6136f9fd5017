"""Python job classes for the Sidekiq interop tests (tests/test_sidekiq_interop.py).

Every job records what it saw by RPUSHing one JSON line onto ``interop:ran`` (the Ruby jobs in
tests/ruby/workers.rb do the same), so the tests observe the effect itself in Redis rather than
trusting either engine's counters.

``python -m apps.interop_app`` runs a worker for these jobs, configured by ``CONVEYOR_*`` variables.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from conveyor import App, Job, Settings, Worker

RAN_KEY = "interop:ran"


class InteropError(Exception):
    """What the failing interop jobs raise."""


def record(job: Job, args: list[Any], **extra: Any) -> None:
    line = {
        "runtime": "python",
        "class": job.job["class"],
        "jid": job.jid,
        "args": args,
        "queue": job.job.get("queue"),
        "pid": os.getpid(),
        "at": time.time(),
        "payload": job.job,
        **extra,
    }
    type(job).app.store.client.rpush(RAN_KEY, json.dumps(line))


def create_app(settings: Settings) -> App:
    """A fresh app with the interop job classes (fresh classes too, so apps never share one)."""
    app = App(settings)

    @app.job(name="HardWorker")
    class HardWorker(Job):
        """Answers to the class name a Ruby app enqueues."""

        def perform(self, *args: Any) -> None:
            record(self, list(args))

    @app.job(name="InteropBlocker")
    class Blocker(Job):
        """Runs until the test pushes onto ``interop:release:<token>`` (at most 20 s)."""

        def perform(self, token: str) -> None:
            record(self, [token], phase="started")
            type(self).app.store.client.blpop([f"interop:release:{token}"], timeout=20)
            record(self, [token], phase="done")

    @app.job(name="InteropFlaky", backtrace=True)
    class Flaky(Job):
        """Fails until the key ``interop:allow:<token>`` exists."""

        def perform(self, token: str) -> None:
            allowed = type(self).app.store.client.exists(f"interop:allow:{token}")
            record(self, [token], ok=bool(allowed))
            if not allowed:
                raise InteropError(f"not allowed yet: {token} ✗")

    @app.job(name="InteropDoomed", retry=0)
    class Doomed(Job):
        """``retry=0``: straight to the dead set, as in Sidekiq."""

        def perform(self, *args: Any) -> None:
            record(self, list(args))
            raise InteropError("doomed from the start")

    @app.job(name="RubyRecorder", queue="ruby")
    class RubyRecorder(Job):
        """Conveyor's handle on a class only Ruby implements (tests/ruby/workers.rb)."""

        def perform(self, *args: Any) -> None:
            raise InteropError("RubyRecorder runs in Ruby Sidekiq, not in Conveyor")

    @app.job(name="Handoff", queue="python", retry_queue="ruby")
    class Handoff(Job):
        """Fails in Python; its retry goes to the "ruby" queue, where Ruby's Handoff runs it."""

        def perform(self, *args: Any) -> None:
            record(self, list(args))
            raise InteropError("Python hands this one over to Ruby")

    @app.job(name="Shared", queue="shared")
    class Shared(Job):
        """Implemented by both engines and consumed from the same queue by both."""

        def perform(self, index: int) -> None:
            time.sleep(0.02)
            record(self, [index])

    return app


def main() -> None:
    app = create_app(Settings.load())
    Worker(app).run(install_signals=True)


if __name__ == "__main__":
    main()

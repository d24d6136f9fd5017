"""Testing support for applications (SPEC CORE-11): an inline mode (jobs run at enqueue) and a
fake mode (jobs collected in memory, drained on demand). Both round-trip payloads through JSON,
so a job that would fail to serialize fails here too.

>>> with app.testing.fake():                       # doctest: +SKIP
...     send_welcome.perform_async(7)
...     assert len(app.testing.jobs()) == 1
...     app.testing.drain()
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, Protocol

from conveyor.core.client import Client
from conveyor.core.job import Job
from conveyor.core.payload import Payload, dumps, queue_of
from conveyor.core.processor import Processor, ProcessorHost
from conveyor.errors import UnknownJobClassError

Mode = Literal["live", "inline", "fake"]


@dataclass
class FakeJob:
    job: Payload
    at: float | None


class TestingHost(ProcessorHost, Protocol):
    """The app as the testing modes see it: they run jobs and take over its client's pushes."""

    @property
    def client(self) -> Client: ...


class Testing:
    """Per-app switch between live Redis and the in-memory modes."""

    def __init__(self, app: TestingHost) -> None:
        self.app = app
        self.mode: Mode = "live"
        self._jobs: list[FakeJob] = []
        self._processor: Processor | None = None

    @contextmanager
    def inline(self) -> Iterator[None]:
        """Run each job synchronously when it is enqueued; its exceptions reach the caller."""
        with self._mode("inline"):
            yield

    @contextmanager
    def fake(self) -> Iterator[None]:
        """Collect jobs in memory instead of pushing them."""
        with self._mode("fake"):
            yield

    @contextmanager
    def _mode(self, mode: Mode) -> Iterator[None]:
        previous, self.mode = self.mode, mode
        client = self.app.client
        previous_sink, client.sink = client.sink, (None if mode == "live" else self)
        try:
            yield
        finally:
            self.mode = previous
            client.sink = previous_sink
            if mode == "fake":
                self._jobs.clear()

    def capture(self, job: Payload, at: float | None) -> None:
        job = json.loads(dumps(job))
        if self.mode == "inline":
            self._run(job)
        else:
            self._jobs.append(FakeJob(job, at))

    def jobs(
        self, job_class: type[Job] | str | None = None, queue: str | None = None
    ) -> list[Payload]:
        """Payloads collected in fake mode, optionally filtered by class and queue."""
        name = (
            job_class if isinstance(job_class, str) or job_class is None else job_class.wire_name()
        )
        return [
            f.job
            for f in self._jobs
            if (name is None or f.job["class"] == name)
            and (queue is None or queue_of(f.job) == queue)
        ]

    def clear(self) -> None:
        self._jobs.clear()

    def drain(
        self, job_class: type[Job] | str | None = None, *, include_scheduled: bool = True
    ) -> int:
        """Run collected jobs (and jobs they enqueue) until none are left; returns how many ran."""
        ran = 0
        while True:
            name = (
                job_class
                if isinstance(job_class, str) or job_class is None
                else job_class.wire_name()
            )
            picked = next(
                (
                    f
                    for f in self._jobs
                    if (name is None or f.job["class"] == name)
                    and (include_scheduled or f.at is None)
                ),
                None,
            )
            if picked is None:
                return ran
            self._jobs.remove(picked)
            self._run(picked.job)
            ran += 1

    def _run(self, job: Payload) -> None:
        if self._processor is None:
            self._processor = Processor(self.app)
        job_class = self.app.registry.get(job["class"])
        if job_class is None:
            raise UnknownJobClassError(f"no job class {job['class']!r} is registered")
        instance = job_class.instantiate()
        instance.job = job
        self._processor.run(job_class, instance, job, queue_of(job), dumps(job))

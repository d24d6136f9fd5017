"""The toolkit's three jobs, thin over :class:`~conveyor.features.imports.pipeline.Imports`. Each
``Imports`` registers its own subclasses on its app (so two apps in one process never share
job state). Wire names:

- ``conveyor.ImportStage`` (import_id, stage): one stage; ``retry=6`` (about 20 minutes).
- ``conveyor.ImportRecord`` (import_id, stage, record_id, locator): one record, under the
  concurrency limit.
- ``conveyor.ImportStuckDetector`` (): run by cron; fails imports without progress.
"""

from __future__ import annotations

from typing import Protocol

from conveyor.core.job import ServiceJob
from conveyor.core.payload import Payload
from conveyor.core.retry import error_class_name
from conveyor.features.imports.model import error_message

STAGE_JOB = "conveyor.ImportStage"
RECORD_JOB = "conveyor.ImportRecord"
STUCK_JOB = "conveyor.ImportStuckDetector"


class ImportRunner(Protocol):
    """What the jobs need of :class:`~conveyor.features.imports.pipeline.Imports`."""

    def run_stage(self, import_id: str, stage: str) -> None: ...

    def run_record(self, import_id: str, stage: str, record_id: str, locator: str) -> None: ...

    def fail(self, import_id: str, message: str, *, reason: str | None = None) -> object: ...

    def give_up_record(
        self, import_id: str, stage: str, record_id: str, exc: BaseException
    ) -> None: ...

    def fail_stuck(self) -> object: ...


class ImportJob(ServiceJob[ImportRunner]):
    """Base of the toolkit's jobs, bound to one app's :class:`Imports`
    (``StageJob.bind(imports)``)."""


class StageJob(ImportJob):
    def perform(self, import_id: str, stage: str) -> None:
        self.service.run_stage(import_id, stage)

    def retries_exhausted(self, job: Payload, exc: BaseException) -> None:
        args = job.get("args") or ["", ""]
        headline = f"stage {args[1]} failed: {error_class_name(exc)}"
        self.service.fail(str(args[0]), f"{headline}: {error_message(exc)}", reason=headline)


class RecordJob(ImportJob):
    def perform(self, import_id: str, stage: str, record_id: str, locator: str) -> None:
        self.service.run_record(import_id, stage, record_id, locator)

    def retries_exhausted(self, job: Payload, exc: BaseException) -> None:
        import_id, stage, record_id, _ = job.get("args") or ["", "", "", ""]
        self.service.give_up_record(str(import_id), str(stage), str(record_id), exc)


class StuckJob(ImportJob):
    def perform(self) -> None:
        self.service.fail_stuck()

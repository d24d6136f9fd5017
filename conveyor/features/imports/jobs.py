"""The toolkit's three jobs, thin over :class:`~conveyor.features.imports.pipeline.Imports`. Each
``Imports`` registers its own subclasses on its app (so two apps in one process never share
job state). Wire names:

- ``conveyor.ImportStage`` (import_id, stage): one stage; ``retry=6`` (about 20 minutes).
- ``conveyor.ImportRecord`` (import_id, stage, record_id, locator): one record, under the
  concurrency limit.
- ``conveyor.ImportStuckDetector`` (): run by cron; fails imports without progress.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from conveyor.core.job import Job
from conveyor.core.payload import Payload
from conveyor.core.retry import error_class_name
from conveyor.features.imports.model import error_message

if TYPE_CHECKING:
    from conveyor.features.imports.pipeline import Imports

STAGE_JOB = "conveyor.ImportStage"
RECORD_JOB = "conveyor.ImportRecord"
STUCK_JOB = "conveyor.ImportStuckDetector"


class ImportJob(Job):
    """Base of the toolkit's jobs: ``imports`` is set on each app's subclass."""

    imports: ClassVar[Imports]


class StageJob(ImportJob):
    def perform(self, import_id: str, stage: str) -> None:
        self.imports.run_stage(import_id, stage)

    def retries_exhausted(self, job: Payload, exc: BaseException) -> None:
        args = job.get("args") or ["", ""]
        headline = f"stage {args[1]} failed: {error_class_name(exc)}"
        self.imports.fail(str(args[0]), f"{headline}: {error_message(exc)}", reason=headline)


class RecordJob(ImportJob):
    def perform(self, import_id: str, stage: str, record_id: str, locator: str) -> None:
        self.imports.run_record(import_id, stage, record_id, locator)

    def retries_exhausted(self, job: Payload, exc: BaseException) -> None:
        import_id, stage, record_id, _ = job.get("args") or ["", "", "", ""]
        self.imports.give_up_record(str(import_id), str(stage), str(record_id), exc)


class StuckJob(ImportJob):
    def perform(self) -> None:
        self.imports.fail_stuck()


def bind(base: type[ImportJob], imports: Imports) -> type[ImportJob]:
    """A subclass of ``base`` bound to ``imports``."""
    return type(base.__name__, (base,), {"imports": imports, "__module__": __name__})

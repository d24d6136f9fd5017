"""The four jobs of a bulk operation, thin over
:class:`~conveyor.features.operations.BulkOperations`.

Each :class:`BulkOperations` registers its own subclasses on its app (so two apps in one process
never share job state). Wire names:

- ``conveyor.BulkOperationScheduler`` (operation_type, user_id, parameters): collects the
  entities, creates the operation (tracked path) and enqueues the batches.
- ``conveyor.BulkOperationBatch`` (operation_id, operation_type, batch, entities, parameters):
  processes entities with tracking; its counting script enqueues the completion job.
- ``conveyor.BulkOperationLegacyBatch`` (operation_type, batch, entities, parameters): the
  untracked path (feature flag off).
- ``conveyor.BulkOperationCompletion`` (operation_id): failure e-mail, then delete.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from conveyor.core.job import Job
from conveyor.core.payload import Payload

if TYPE_CHECKING:
    from conveyor.features.operations.service import BulkOperations

SCHEDULER = "conveyor.BulkOperationScheduler"
BATCH = "conveyor.BulkOperationBatch"
LEGACY_BATCH = "conveyor.BulkOperationLegacyBatch"
COMPLETION = "conveyor.BulkOperationCompletion"


class OperationJob(Job):
    """Base of the operation jobs: ``operations`` is set on each app's subclass."""

    operations: ClassVar[BulkOperations]


class SchedulerJob(OperationJob):
    def perform(self, operation_type: str, user_id: int | str, parameters: dict[str, Any]) -> None:
        self.operations.schedule(self.jid, operation_type, user_id, parameters)


class BatchJob(OperationJob):
    def perform(
        self,
        operation_id: str,
        operation_type: str,
        batch: int,
        entities: list[dict[str, Any]],
        parameters: dict[str, Any],
    ) -> None:
        self.operations.run_batch(operation_id, operation_type, batch, entities, parameters)

    def retries_exhausted(self, job: Payload, exc: BaseException) -> None:
        # Count the batch's entities as failed so the operation can still complete.
        self.operations.give_up_batch(job.get("args", []), exc)


class LegacyBatchJob(OperationJob):
    def perform(
        self,
        operation_type: str,
        batch: int,
        entities: list[dict[str, Any]],
        parameters: dict[str, Any],
    ) -> None:
        self.operations.run_legacy_batch(operation_type, batch, entities, parameters)


class CompletionJob(OperationJob):
    def perform(self, operation_id: str) -> None:
        self.operations.complete(operation_id)


def bind(base: type[OperationJob], operations: BulkOperations) -> type[OperationJob]:
    """A subclass of ``base`` bound to ``operations``."""
    return type(base.__name__, (base,), {"operations": operations, "__module__": __name__})

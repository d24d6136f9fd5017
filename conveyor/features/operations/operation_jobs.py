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

from collections.abc import Sequence
from typing import Any, Protocol

from conveyor.core.job import ServiceJob
from conveyor.core.payload import Payload

SCHEDULER = "conveyor.BulkOperationScheduler"
BATCH = "conveyor.BulkOperationBatch"
LEGACY_BATCH = "conveyor.BulkOperationLegacyBatch"
COMPLETION = "conveyor.BulkOperationCompletion"


class OperationRunner(Protocol):
    """What the jobs need of :class:`~conveyor.features.operations.BulkOperations`."""

    def schedule(
        self, jid: str, operation_type: str, user_id: int | str, parameters: dict[str, Any]
    ) -> object: ...

    def run_batch(
        self,
        operation_id: str,
        operation_type: str,
        batch: int,
        entities: Sequence[dict[str, Any]],
        parameters: dict[str, Any],
    ) -> object: ...

    def give_up_batch(self, args: Sequence[Any], exc: BaseException) -> None: ...

    def run_legacy_batch(
        self,
        operation_type: str,
        batch: int,
        entities: Sequence[dict[str, Any]],
        parameters: dict[str, Any],
    ) -> object: ...

    def complete(self, operation_id: str) -> object: ...


class OperationJob(ServiceJob[OperationRunner]):
    """Base of the operation jobs, bound to one app's :class:`BulkOperations`."""


class SchedulerJob(OperationJob):
    def perform(self, operation_type: str, user_id: int | str, parameters: dict[str, Any]) -> None:
        self.service.schedule(self.jid, operation_type, user_id, parameters)


class BatchJob(OperationJob):
    def perform(
        self,
        operation_id: str,
        operation_type: str,
        batch: int,
        entities: list[dict[str, Any]],
        parameters: dict[str, Any],
    ) -> None:
        self.service.run_batch(operation_id, operation_type, batch, entities, parameters)

    def retries_exhausted(self, job: Payload, exc: BaseException) -> None:
        # Count the batch's entities as failed so the operation can still complete.
        self.service.give_up_batch(job.get("args", []), exc)


class LegacyBatchJob(OperationJob):
    def perform(
        self,
        operation_type: str,
        batch: int,
        entities: list[dict[str, Any]],
        parameters: dict[str, Any],
    ) -> None:
        self.service.run_legacy_batch(operation_type, batch, entities, parameters)


class CompletionJob(OperationJob):
    def perform(self, operation_id: str) -> None:
        self.service.complete(operation_id)

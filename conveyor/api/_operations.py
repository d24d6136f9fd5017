"""Tracked bulk operations as the data API returns them (SPEC OPS-5): running operations with
their progress, their failed items, and the final totals of finished ones.

>>> operations = OperationsApi.of(api)                       # doctest: +SKIP
>>> [(o.id, o.percent) for o in operations.list()]           # doctest: +SKIP
[('5f0c...', 42.0)]
>>> operations.failed_items("5f0c...", 0, 20)[0].error_code  # doctest: +SKIP
'service_error'
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from conveyor.api._source import Source
from conveyor.errors import NotFoundError, OperationError
from conveyor.redis.operations import Operation, OperationStore, check_id
from conveyor.redis.store import Store

#: Failed items per page.
PAGE = 100


@dataclass(frozen=True)
class OperationRecord:
    """A running operation (pending, running, or completed and about to be deleted)."""

    id: str
    operation_type: str
    user_id: str
    status: str
    total_items: int
    successful_items: int
    failed_items: int
    created_at: float
    parameters: dict[str, Any]
    completed_at: float | None = None
    notified_at: float | None = None
    #: Seconds until Redis expires it (72 hours after creation; -1: kept, as notify_failed).
    expires_in: int | None = None
    #: Why the failure e-mail could not be delivered (status ``notify_failed``).
    notify_error: str = ""

    @classmethod
    def from_operation(cls, op: Operation, expires_in: int | None = None) -> OperationRecord:
        return cls(
            id=op.id,
            operation_type=op.operation_type,
            user_id=op.user_id,
            status=_status(op),
            total_items=op.total_items,
            successful_items=op.successful_items,
            failed_items=op.failed_items,
            created_at=op.created_at,
            parameters=op.parameters,
            completed_at=op.completed_at,
            notified_at=op.notified_at,
            expires_in=expires_in,
            notify_error=op.notify_error,
        )

    @property
    def processed_items(self) -> int:
        return self.successful_items + self.failed_items

    @property
    def percent(self) -> float:
        """Processed share of the total, 0-100."""
        if self.total_items <= 0:
            return 100.0
        return min(100.0, 100.0 * self.processed_items / self.total_items)

    @property
    def finished(self) -> bool:
        return False


@dataclass(frozen=True)
class FinishedOperationRecord:
    """Final totals of an operation that completed and was deleted (kept 72 hours)."""

    id: str
    operation_type: str
    total_items: int
    successful_items: int
    failed_items: int
    created_at: float | None
    completed_at: float | None
    finished_at: float | None

    @classmethod
    def from_summary(cls, operation_id: str, data: dict[str, Any]) -> FinishedOperationRecord:
        return cls(
            id=operation_id,
            operation_type=str(data.get("operation_type", "")),
            total_items=_int(data.get("total_items")),
            successful_items=_int(data.get("successful_items")),
            failed_items=_int(data.get("failed_items")),
            created_at=_float(data.get("created_at")),
            completed_at=_float(data.get("completed_at")),
            finished_at=_float(data.get("finished_at")),
        )

    @property
    def processed_items(self) -> int:
        return self.successful_items + self.failed_items

    @property
    def percent(self) -> float:
        return 100.0

    @property
    def status(self) -> str:
        return "finished"

    @property
    def finished(self) -> bool:
        return True


@dataclass(frozen=True)
class FailedItemRecord:
    """One failed item of an operation."""

    entity_id: Any
    entity_type: str
    entity_name: str
    entity_full_path: str
    error_message: str
    error_code: str
    created_at: float | None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FailedItemRecord:
        return cls(
            entity_id=data.get("entity_id"),
            entity_type=str(data.get("entity_type", "")),
            entity_name=str(data.get("entity_name", "")),
            entity_full_path=str(data.get("entity_full_path", "")),
            error_message=str(data.get("error_message", "")),
            error_code=str(data.get("error_code", "")),
            created_at=_float(data.get("created_at")),
        )


class OperationsApi:
    """Read access to bulk operations (the CLI's ``conveyor ops`` and the dashboard use it)."""

    def __init__(self, store: Store, now: Callable[[], float] | None = None) -> None:
        self.store = OperationStore(store) if now is None else OperationStore(store, now=now)

    @classmethod
    def of(cls, api: Source) -> OperationsApi:
        """The operations of the data API's app. Example: ``OperationsApi.of(api).list()``."""
        return cls(api.store, now=api.now)

    def list(self) -> list[OperationRecord]:
        """Every operation that exists, oldest first. Example: ``api_ops.list()[0].percent``."""
        ids = self.store.operation_ids()
        return [OperationRecord.from_operation(op) for op in self.store.get_many(ids)]

    def find(self, operation_id: str) -> OperationRecord | None:
        """The running operation ``operation_id``, or ``None``."""
        op = self.store.get_operation(operation_id)
        if op is None:
            return None
        return OperationRecord.from_operation(op, self.store.ttl(operation_id))

    def get(self, operation_id: str) -> OperationRecord:
        """The running operation ``operation_id``; :class:`NotFoundError` if there is none."""
        found = self.find(operation_id)
        if found is None:
            raise NotFoundError(
                f"no running bulk operation {operation_id!r}; it finished, expired (72 h) or "
                "never existed (see `conveyor ops list`)"
            )
        return found

    def finished(self, operation_id: str) -> FinishedOperationRecord | None:
        """Final totals of ``operation_id`` if it completed within the last 72 hours."""
        summary = self.store.finished(operation_id)
        return (
            None if summary is None else FinishedOperationRecord.from_summary(operation_id, summary)
        )

    def status(self, operation_id: str) -> OperationRecord | FinishedOperationRecord | None:
        """Running record, else final totals, else ``None`` (what a progress display polls)."""
        return self.find(operation_id) or self.finished(operation_id)

    def failed_items(
        self, operation_id: str, start: int = 0, count: int = PAGE
    ) -> builtins.list[FailedItemRecord]:
        """Failed items ``start`` .. ``start + count - 1``, oldest first."""
        if start < 0 or count < 1:
            raise ValueError(f"start must be >= 0 and count >= 1, got {start}, {count}")
        items = self.store.failed_items_page(operation_id, start, start + count - 1)
        return [FailedItemRecord.from_dict(i) for i in items]

    def dismiss(self, operation_id: str) -> bool:
        """Delete an operation whose e-mail could not be delivered (status ``notify_failed``),
        keeping its final totals; :class:`NotFoundError` if there is none.

        Example: ``OperationsApi.of(api).dismiss("5f0c...")``.
        """
        record = self.get(operation_id)
        if record.status != "notify_failed":
            raise OperationError(
                f"bulk operation {operation_id} is {record.status}; only one whose e-mail could "
                "not be delivered (notify_failed) can be dismissed"
            )
        return self.store.finish_operation(operation_id)

    def resolve(self, text: str) -> str:
        """An operation id from a full id or a unique prefix of a running one."""
        if self.store.get_operation(check_id(text)) is not None or self.store.finished(text):
            return text
        matches = [i for i in self.store.operation_ids() if i.startswith(text)]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise NotFoundError(f"{text!r} matches {len(matches)} operations; give more of the id")
        raise NotFoundError(
            f"no bulk operation {text!r}; it may have finished more than 72 h ago or never "
            "existed (see `conveyor ops list`)"
        )


def _status(op: Operation) -> str:
    """pending, running, completed (counted, e-mail not handled yet) or notify_failed."""
    if op.status == "notify_failed":
        return op.status
    return "completed" if op.completed_at is not None else op.status


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _float(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None

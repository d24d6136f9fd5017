"""Tracked bulk operations in Redis (SPEC OPS-1): GitLab's ``RedisStore`` API and key layout.

One operation is the hash ``background_operation:{id}`` (id, operation_type, user_id,
parameters JSON, status pending|running, total_items, successful_items, failed_items,
created_at; Conveyor adds completed_at and notified_at) and the list
``background_operation:{id}:failed_items`` of JSON objects. Both expire 72 hours after the
operation was created. Every change that reads and writes, or touches several keys, is one Lua
script (``op_*.lua``); the script that counts also detects completion, so exactly one caller
sees an operation complete.

>>> ops = OperationStore(app.store)                                  # doctest: +SKIP
>>> op_id = ops.create_operation("attribute_update", 7, 2, {"mode": "ADD"})  # doctest: +SKIP
>>> ops.increment_successful(op_id).outcome                          # doctest: +SKIP
'counted'
>>> ops.add_failed_item(op_id, entity_id=12, entity_type="Project", entity_name="api",
...     entity_full_path="acme/api", error_message="Permission denied",
...     error_code="service_error").outcome                              # doctest: +SKIP
'completed'
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from conveyor.errors import OperationError
from conveyor.redis.store import Store

#: Operations (hash, failed items, batch set) expire this long after creation.
OPERATION_TTL = 72 * 3600
#: Final totals of a finished operation are kept this long after it was deleted.
FINISHED_TTL = 72 * 3600
#: Failed items (and batch ids) per script call; Lua's unpack() has a stack limit near 8000.
MAX_ITEMS_PER_CALL = 5000

_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

RecordOutcome = Literal["missing", "duplicate", "counted", "completed"]
CreateOutcome = Literal["created", "exists", "finished"]


def new_operation_id() -> str:
    """A random operation id: 24 hex characters (96 bits), the same form as a jid."""
    return secrets.token_hex(12)


def check_id(operation_id: str) -> str:
    if not isinstance(operation_id, str) or not _ID.match(operation_id):
        raise OperationError(
            f"operation id {operation_id!r} is not valid: use 1-64 letters, digits, '_', '.' "
            "or '-' (ids from create_operation are 24 hex characters)"
        )
    return operation_id


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation as stored (``get_operation``)."""

    id: str
    operation_type: str
    #: As given to ``create_operation``, as a string.
    user_id: str
    parameters: dict[str, Any]
    status: str
    total_items: int
    successful_items: int
    failed_items: int
    created_at: float
    #: When the call that completed the totals ran (``None`` while running).
    completed_at: float | None = None
    #: When the failure e-mail was sent (``None`` if not sent).
    notified_at: float | None = None
    #: ``"int"`` when the user id was given as an int (hooks get it back as one), else ``"str"``.
    user_id_type: str = "str"
    #: Why the failure e-mail could not be delivered (status ``notify_failed``).
    notify_error: str = ""
    notify_failed_at: float | None = None

    @property
    def user(self) -> int | str:
        """The user id in the type it was given (``7``, not ``'7'``)."""
        if self.user_id_type == "int":
            try:
                return int(self.user_id)
            except ValueError:
                return self.user_id
        return self.user_id

    @property
    def processed_items(self) -> int:
        return self.successful_items + self.failed_items

    @property
    def completed(self) -> bool:
        return self.completed_at is not None


@dataclass(frozen=True, slots=True)
class Counted:
    """What one counting call did, with the totals right after it."""

    outcome: RecordOutcome
    successful_items: int
    failed_items: int
    total_items: int

    @property
    def completed(self) -> bool:
        """True only for the one call that completed the operation."""
        return self.outcome == "completed"


@dataclass(frozen=True, slots=True)
class CompletionPush:
    """A job payload pushed onto ``queue`` in the same script that completes an operation."""

    queue: str
    payload: str


class OperationStore:
    """The OPS-1 store, bound to one :class:`~conveyor.redis.store.Store` (client + prefix).

    ``now`` gives epoch seconds for ``created_at``/``completed_at`` (pass an app's clock).
    """

    def __init__(self, store: Store, now: Callable[[], float] = time.time) -> None:
        self.store = store
        self.keys = store.keys
        self.now = now

    # -- GitLab's API -----------------------------------------------------------------------------
    def create_operation(
        self,
        operation_type: str,
        user_id: int | str,
        total_items: int,
        parameters: Mapping[str, Any],
    ) -> str:
        """Create an operation (status ``pending``); returns its new random id."""
        for _ in range(5):
            operation_id = new_operation_id()
            if (
                self.open_operation(operation_id, operation_type, user_id, total_items, parameters)
                == "created"
            ):
                return operation_id
        raise OperationError("could not find a free operation id after 5 tries")  # pragma: no cover

    def increment_successful(
        self, operation_id: str, n: int = 1, *, completion: CompletionPush | None = None
    ) -> Counted:
        """Count ``n`` successful items (not idempotent: prefer :meth:`record_batch`)."""
        if not isinstance(n, int) or n < 0:
            raise OperationError(f"increment_successful: n must be a whole number >= 0, got {n!r}")
        return self._record(operation_id, "", n, [], completion)

    def add_failed_item(
        self,
        operation_id: str,
        *,
        entity_id: int | str,
        entity_type: str,
        entity_name: str,
        entity_full_path: str,
        error_message: str,
        error_code: str,
        completion: CompletionPush | None = None,
    ) -> Counted:
        """Record one failed item and count it (not idempotent: prefer :meth:`record_batch`)."""
        item = self.failed_item(
            entity_id=entity_id,
            entity_type=entity_type,
            entity_name=entity_name,
            entity_full_path=entity_full_path,
            error_message=error_message,
            error_code=error_code,
        )
        return self._record(operation_id, "", 0, [item], completion)

    def get_operation(self, operation_id: str) -> Operation | None:
        """The operation, or ``None`` when it does not exist (finished, deleted or expired)."""
        raw = self.store.client.hgetall(self.keys.background_operation(check_id(operation_id)))
        return decode_operation(operation_id, raw) if raw else None

    def get_failed_items(self, operation_id: str) -> list[dict[str, Any]]:
        """Every failed item, oldest first, as dicts (entity_id, entity_type, entity_name,
        entity_full_path, error_message, error_code, created_at)."""
        return self.failed_items_page(operation_id, 0, -1)

    def delete_operation(self, operation_id: str) -> bool:
        """Delete the hash, the failed items and the batch set; True if it existed."""
        return self._delete(operation_id, keep_seconds=0)

    # -- Conveyor's additions -------------------------------------------------------------------
    def open_operation(
        self,
        operation_id: str,
        operation_type: str,
        user_id: int | str,
        total_items: int,
        parameters: Mapping[str, Any],
    ) -> CreateOutcome:
        """Create the operation under a chosen id unless it exists (``'exists'``, unchanged) or
        finished already (``'finished'``): a retried creator is then harmless."""
        check_id(operation_id)
        if not isinstance(total_items, int) or isinstance(total_items, bool) or total_items < 1:
            raise OperationError(
                f"total_items must be a whole number >= 1, got {total_items!r}; do not create an "
                "operation for nothing"
            )
        if not operation_type or not isinstance(operation_type, str):
            raise OperationError(
                f"operation_type must be a non-empty string, got {operation_type!r}"
            )
        try:
            params = json.dumps(dict(parameters), separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise OperationError(
                f"parameters of {operation_type!r} must be JSON-native values: {exc}"
            ) from None
        now = self.now()
        fields: dict[str, str] = {
            "id": operation_id,
            "operation_type": operation_type,
            "user_id": str(user_id),
            "user_id_type": "int" if isinstance(user_id, int) else "str",
            "parameters": params,
            "status": "pending",
            "total_items": str(total_items),
            "successful_items": "0",
            "failed_items": "0",
            "created_at": repr(now),
        }
        k = self.keys
        args: list[str | int | float] = [OPERATION_TTL, now, operation_id]
        for name, value in fields.items():
            args += (name, value)
        keys = [
            k.background_operation(operation_id),
            k.background_operation_finished(operation_id),
            k.background_operations,
        ]
        outcome: CreateOutcome = self.store.scripts.run("op_create", keys, args)
        return outcome

    def record_batch(
        self,
        operation_id: str,
        batch: str,
        successful: int,
        failed: Sequence[str],
        *,
        completion: CompletionPush | None = None,
    ) -> Counted:
        """Count one batch's results once: ``successful`` items and ``failed`` items (JSON
        from :meth:`failed_item`). A batch id already counted is a no-op (``'duplicate'``)."""
        if not batch:
            raise OperationError("record_batch needs a non-empty batch id")
        return self._record(operation_id, batch, successful, failed, completion)

    def failed_item(
        self,
        *,
        entity_id: int | str,
        entity_type: str,
        entity_name: str,
        entity_full_path: str,
        error_message: str,
        error_code: str,
    ) -> str:
        """One failed item as stored (JSON with a ``created_at``)."""
        return json.dumps(
            {
                "entity_id": entity_id,
                "entity_type": entity_type,
                "entity_name": entity_name,
                "entity_full_path": entity_full_path,
                "error_message": error_message,
                "error_code": error_code,
                "created_at": self.now(),
            },
            separators=(",", ":"),
        )

    def failed_items_page(self, operation_id: str, start: int, stop: int) -> list[dict[str, Any]]:
        """Failed items ``start..stop`` (inclusive, as LRANGE), decoded; unreadable ones are
        returned as ``{"error_message": <raw text>}``."""
        key = self.keys.background_operation_failed_items(check_id(operation_id))
        out: list[dict[str, Any]] = []
        for raw in self.store.client.lrange(key, start, stop):
            try:
                item = json.loads(raw)
            except ValueError:
                item = None
            out.append(item if isinstance(item, dict) else {"error_message": str(raw)})
        return out

    def failed_count(self, operation_id: str) -> int:
        key = self.keys.background_operation_failed_items(check_id(operation_id))
        return int(self.store.client.llen(key))

    def counted_batches(self, operation_id: str) -> set[str]:
        """Batch ids already counted."""
        key = self.keys.background_operation_batches(check_id(operation_id))
        return {str(b) for b in self.store.client.smembers(key)}

    def mark_notified(self, operation_id: str) -> bool:
        """Note that the failure e-mail went out; False if it was noted already or the
        operation is gone."""
        key = self.keys.background_operation(check_id(operation_id))
        return int(self.store.scripts.run("op_notified", [key], [self.now()])) == 1

    def mark_notify_failed(self, operation_id: str, reason: str) -> bool:
        """The failure e-mail could not be delivered: status ``notify_failed`` with
        ``reason``, and the operation no longer expires (until delivered or dismissed)."""
        k = self.keys
        check_id(operation_id)
        keys = [
            k.background_operation(operation_id),
            k.background_operation_failed_items(operation_id),
            k.background_operation_batches(operation_id),
        ]
        done = self.store.scripts.run("op_notify_failed", keys, [self.now(), reason[:500]])
        return int(done) == 1

    def finish_operation(self, operation_id: str) -> bool:
        """Delete the operation, keeping its final totals for 72 hours (see :meth:`finished`)."""
        return self._delete(operation_id, keep_seconds=FINISHED_TTL)

    def finished(self, operation_id: str) -> dict[str, Any] | None:
        """Final totals of an operation deleted by :meth:`finish_operation`, else ``None``."""
        raw = self.store.client.get(self.keys.background_operation_finished(check_id(operation_id)))
        if raw is None:
            return None
        try:
            data = json.loads(raw)
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    def ttl(self, operation_id: str) -> int:
        """Seconds until the operation expires (-2: no such operation)."""
        return int(self.store.client.ttl(self.keys.background_operation(check_id(operation_id))))

    def operation_ids(self) -> list[str]:
        """Ids of the operations that exist, oldest first (prunes expired ones; admin path)."""
        k = self.keys
        prefix = k.background_operation("")
        return [
            str(i) for i in self.store.scripts.run("op_prune", [k.background_operations], [prefix])
        ]

    def get_many(self, operation_ids: Sequence[str]) -> list[Operation]:
        """The operations that still exist among ``operation_ids``, in that order."""
        pipe = self.store.client.pipeline(transaction=False)
        for operation_id in operation_ids:
            pipe.hgetall(self.keys.background_operation(check_id(operation_id)))
        return [
            decode_operation(i, raw)
            for i, raw in zip(operation_ids, pipe.execute(), strict=True)
            if raw
        ]

    # -- internals ------------------------------------------------------------------------------
    def _record(
        self,
        operation_id: str,
        batch: str,
        successful: int,
        failed: Sequence[str],
        completion: CompletionPush | None,
    ) -> Counted:
        if len(failed) > MAX_ITEMS_PER_CALL:
            raise OperationError(
                f"{len(failed)} failed items in one call; record at most {MAX_ITEMS_PER_CALL} "
                "per call (use smaller batches)"
            )
        k = self.keys
        check_id(operation_id)
        queue = completion.queue if completion else ""
        keys = [
            k.background_operation(operation_id),
            k.background_operation_failed_items(operation_id),
            k.background_operation_batches(operation_id),
            k.queues,
            k.queue(queue),
        ]
        args: list[str | int | float] = [
            batch,
            successful,
            self.now(),
            queue,
            completion.payload if completion else "",
            *failed,
        ]
        outcome, ok, bad, total = self.store.scripts.run("op_record", keys, args)
        return Counted(str(outcome), int(ok), int(bad), int(total))  # type: ignore[arg-type]

    def _delete(self, operation_id: str, keep_seconds: int) -> bool:
        k = self.keys
        check_id(operation_id)
        keys = [
            k.background_operation(operation_id),
            k.background_operation_failed_items(operation_id),
            k.background_operation_batches(operation_id),
            k.background_operation_finished(operation_id),
            k.background_operations,
        ]
        args = [operation_id, keep_seconds, repr(self.now())]
        return int(self.store.scripts.run("op_delete", keys, args)) == 1


def _float(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def decode_operation(operation_id: str, raw: Mapping[Any, Any]) -> Operation:
    """An :class:`Operation` from its hash, leniently (a bad field reads as empty/zero)."""
    h = {str(k): str(v) for k, v in raw.items()}
    try:
        parameters = json.loads(h.get("parameters", "{}"))
    except ValueError:
        parameters = {}
    return Operation(
        id=h.get("id", operation_id),
        operation_type=h.get("operation_type", ""),
        user_id=h.get("user_id", ""),
        parameters=parameters if isinstance(parameters, dict) else {},
        status=h.get("status", ""),
        total_items=_int(h.get("total_items")),
        successful_items=_int(h.get("successful_items")),
        failed_items=_int(h.get("failed_items")),
        created_at=_float(h.get("created_at")) or 0.0,
        completed_at=_float(h.get("completed_at")),
        notified_at=_float(h.get("notified_at")),
        user_id_type=h.get("user_id_type", "str"),
        notify_error=h.get("notify_error", ""),
        notify_failed_at=_float(h.get("notify_failed_at")),
    )

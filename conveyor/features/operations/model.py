"""What a bulk operation is made of: the entities it touches, the result of the per-entity
service, and the definition an application writes (how to collect entities, how to process
one).

>>> class ArchiveProjects(BulkOperation):
...     operation_type = "archive"
...     title = "Project archiving"
...     def collect(self, parameters, user_id):
...         return [Entity(1, "Project", "api", "acme/api")]
...     def process(self, entity, parameters):
...         return ServiceResult.error("Permission denied") if entity.id == 2 else None
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from conveyor.errors import ConfigurationError

#: The error codes of failed items (SPEC OPS-2).
SERVICE_ERROR = "service_error"
UNEXPECTED_ERROR = "unexpected_error"
#: What a user reads about an unexpected error (the details are in the worker's log).
UNEXPECTED_MESSAGE = "An unexpected error occurred"


@dataclass(frozen=True, slots=True)
class Entity:
    """One thing an operation updates (a project, a group, a row...).

    ``full_path`` makes the link in the failure e-mail (``base_url/full_path``).
    """

    id: int | str
    type: str = "Project"
    name: str = ""
    full_path: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "name": self.name, "full_path": self.full_path}

    @classmethod
    def from_json(cls, data: Any) -> Entity:
        if not isinstance(data, dict) or "id" not in data:
            raise ConfigurationError(f"not an entity: {data!r}; expected an object with an id")
        return cls(
            id=data["id"],
            type=str(data.get("type", "Project")),
            name=str(data.get("name", "")),
            full_path=str(data.get("full_path", "")),
        )


@dataclass(frozen=True, slots=True)
class ServiceResult:
    """What the per-entity service returned: success, or an error with a readable message
    (recorded as a ``service_error`` failed item)."""

    ok: bool = True
    message: str = ""

    @classmethod
    def success(cls) -> ServiceResult:
        return cls(True, "")

    @classmethod
    def error(cls, message: str) -> ServiceResult:
        return cls(False, message)


class BulkOperation:
    """Base of an application's bulk operation. Subclass it, set ``operation_type`` and write
    :meth:`collect` and :meth:`process`; register an instance with
    :meth:`conveyor.features.operations.BulkOperations.register`.

    ``process`` runs in batch jobs, so it must be idempotent: a batch can run again after a
    crash (it is then counted once, but its entities are processed again).
    """

    #: Name of the operation (stored as ``operation_type``; e.g. ``"attribute_update"``).
    operation_type: ClassVar[str] = ""
    #: Human name used in the e-mail's subject (default: ``operation_type``).
    title: ClassVar[str] = ""
    #: Entities per batch job (``None``: the settings' ``batch_size``).
    batch_size: ClassVar[int | None] = None

    def collect(self, parameters: dict[str, Any], user_id: int | str) -> Iterable[Entity]:
        """The entities to process, in a stable order (runs in the scheduler job). ``user_id``
        is the one given to ``start``, in its type (an int stays an int)."""
        raise NotImplementedError(f"{type(self).__name__} must define collect()")

    def process(self, entity: Entity, parameters: dict[str, Any]) -> ServiceResult | bool | None:
        """Process one entity. Return ``True``, ``None`` or :meth:`ServiceResult.success` on
        success; ``False`` or :meth:`ServiceResult.error` for a service error (the error's
        message goes into the e-mail). An exception, or any other return value, is recorded
        as an ``unexpected_error`` of this entity alone (the batch goes on); the e-mail says
        only that an unexpected error occurred, the details go to the worker's log."""
        raise NotImplementedError(f"{type(self).__name__} must define process()")

    def after_batch(self, operation_id: str | None, batch: int, outcome: str) -> None:
        """Called after a batch was counted (``outcome``: 'counted', 'completed', 'duplicate',
        'missing'; ``operation_id`` is ``None`` on the legacy path, outcome 'untracked')."""

    @property
    def label(self) -> str:
        return self.title or self.operation_type

"""Tracked bulk operations with failure e-mail (SPEC OPS-1 … OPS-5).

>>> from conveyor.features.operations import BulkOperation, BulkOperations, Entity, ServiceResult
>>> class Archive(BulkOperation):
...     operation_type = "archive"
...     def collect(self, parameters, user_id):
...         return [Entity(1, "Project", "api", "acme/api")]
...     def process(self, entity, parameters):
...         return ServiceResult.error("Permission denied")
>>> ops = BulkOperations(app, recipient=lambda user_id: "ada@example.com")  # doctest: +SKIP
>>> ops.register(Archive())                                                # doctest: +SKIP
>>> ops.start("archive", user_id=7)                                        # doctest: +SKIP

See docs/bulk-operations.md.
"""

from conveyor.features.operations.mail import entity_link, render_failure_email, send
from conveyor.features.operations.model import (
    SERVICE_ERROR,
    UNEXPECTED_ERROR,
    UNEXPECTED_MESSAGE,
    BulkOperation,
    Entity,
    ServiceResult,
)
from conveyor.features.operations.service import BulkOperations, Mailer, RecipientLookup
from conveyor.features.operations.settings import DEFAULT_FLAG, MailSettings, OperationsSettings
from conveyor.redis.operations import OPERATION_TTL, Counted, Operation, OperationStore

__all__ = [
    "DEFAULT_FLAG",
    "OPERATION_TTL",
    "SERVICE_ERROR",
    "UNEXPECTED_ERROR",
    "UNEXPECTED_MESSAGE",
    "BulkOperation",
    "BulkOperations",
    "Counted",
    "Entity",
    "MailSettings",
    "Mailer",
    "Operation",
    "OperationStore",
    "OperationsSettings",
    "RecipientLookup",
    "ServiceResult",
    "entity_link",
    "render_failure_email",
    "send",
]

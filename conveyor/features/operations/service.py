"""Tracked bulk operations (SPEC OPS-2 … OPS-4): the bulk-update service and the work of its
scheduler, batch and completion jobs.

Flow: :meth:`BulkOperations.start` (the service) enqueues the scheduler job; the scheduler
collects the entities and, when the feature flag is on for the user, creates the operation and
enqueues batch jobs; each batch processes its entities and counts them once in one Lua script,
which also detects completion and, for exactly one batch, pushes the completion job; the
completion job sends the failure e-mail (if anything failed) and deletes the operation. With
the flag off the scheduler enqueues legacy batches: no tracking, no e-mail.

>>> operations = BulkOperations(app, OperationsSettings(base_url="https://gitlab.example.com"),
...                             recipient=lambda user_id: users[user_id].email)  # doctest: +SKIP
>>> operations.register(ArchiveProjects())                                       # doctest: +SKIP
>>> operations.start("archive", user_id=7, parameters={"reason": "cleanup"})     # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any

from conveyor.core.extensions import ExtensionKey
from conveyor.core.job import EnqueueResult
from conveyor.core.payload import dumps
from conveyor.errors import ConfigurationError, MailError
from conveyor.features.flags import Flags
from conveyor.features.operations import operation_jobs as jobs
from conveyor.features.operations.mail import render_failure_email, send
from conveyor.features.operations.model import (
    SERVICE_ERROR,
    UNEXPECTED_ERROR,
    UNEXPECTED_MESSAGE,
    BulkOperation,
    Entity,
    ServiceResult,
)
from conveyor.features.operations.settings import OperationsSettings
from conveyor.redis.operations import CompletionPush, Counted, Operation, OperationStore

if TYPE_CHECKING:
    from conveyor.core.app import App

log = logging.getLogger("conveyor.operations")

#: Returns the e-mail address of a user id (in the type ``start`` was given: ``7`` stays an
#: int), or ``None``: the operation then stays visible as ``notify_failed``.
RecipientLookup = Callable[[int | str], "str | None"]
#: Sends one e-mail (default: SMTP with the settings' ``mail``).
Mailer = Callable[[EmailMessage], None]

#: Error messages of failed items are cut to this many characters.
MAX_ERROR_MESSAGE = 1000


class BulkOperations:
    """Bulk operations of one app: definitions, settings, the service and the job bodies.

    Creating it registers the four operation jobs on ``app``; worker processes must create it
    too (in the module the worker loads) and register the same definitions.
    ``settings=None`` reads ``CONVEYOR_OPERATIONS_*``/``CONVEYOR_SMTP_*`` on first use.
    ``recipient`` maps the user id (as given to :meth:`start`: an int stays an int) to an
    e-mail address; it is the only source of personal data and its answer is never logged.
    An operation whose e-mail cannot be delivered (no address, SMTP refused) is not deleted:
    it stays visible with status ``notify_failed`` until delivered or dismissed.
    """

    def __init__(
        self,
        app: App,
        settings: OperationsSettings | None = None,
        *,
        recipient: RecipientLookup | None = None,
        mailer: Mailer | None = None,
    ) -> None:
        if BULK_OPERATIONS in app.extensions:
            raise ConfigurationError(
                "this app already has BulkOperations; use BulkOperations.of(app) to get it"
            )
        self.app = app
        self._settings = settings
        self.recipient = recipient
        self.mailer: Mailer = mailer or self._smtp
        self.definitions: dict[str, BulkOperation] = {}
        self._lock = threading.Lock()
        self.scheduler_job = app.register(jobs.SchedulerJob.bind(self), name=jobs.SCHEDULER)
        self.batch_job = app.register(jobs.BatchJob.bind(self), name=jobs.BATCH)
        self.legacy_batch_job = app.register(jobs.LegacyBatchJob.bind(self), name=jobs.LEGACY_BATCH)
        self.completion_job = app.register(jobs.CompletionJob.bind(self), name=jobs.COMPLETION)
        app.extensions[BULK_OPERATIONS] = self

    @classmethod
    def of(cls, app: App) -> BulkOperations:
        """The app's instance, created with default settings if it has none yet."""
        return app.extensions.get(BULK_OPERATIONS) or cls(app)

    @property
    def settings(self) -> OperationsSettings:
        if self._settings is None:
            with self._lock:
                if self._settings is None:
                    self._settings = OperationsSettings.from_env()
        return self._settings

    @property
    def store(self) -> OperationStore:
        """The OPS-1 store on the app's Redis, stamped with the app's clock."""
        return OperationStore(self.app.store, now=self.app.clock.time)

    # -- definitions ----------------------------------------------------------------------------
    def register(self, definition: BulkOperation) -> BulkOperation:
        """Make an operation type known to this process (the service and every worker)."""
        name = definition.operation_type
        if not name or not isinstance(name, str):
            raise ConfigurationError(
                f"{type(definition).__name__} has no operation_type; set e.g. "
                "operation_type = 'attribute_update'"
            )
        size = definition.batch_size
        if size is not None and (not isinstance(size, int) or not 1 <= size <= 5000):
            raise ConfigurationError(f"{name}: batch_size must be 1-5000, got {size!r}")
        existing = self.definitions.get(name)
        if existing is not None and type(existing) is not type(definition):
            raise ConfigurationError(
                f"operation type {name!r} is already registered by {type(existing).__name__}"
            )
        self.definitions[name] = definition
        return definition

    def definition(self, operation_type: str) -> BulkOperation:
        found = self.definitions.get(operation_type)
        if found is None:
            known = ", ".join(sorted(self.definitions)) or "none"
            raise ConfigurationError(
                f"no bulk operation {operation_type!r} is registered in this process (known: "
                f"{known}); register it with BulkOperations.register() where the worker loads"
            )
        return found

    def tracking_enabled(self, user_id: int | str) -> bool:
        """Whether the feature flag sends this user's operations down the tracked path."""
        return Flags.of(self.app).enabled(self.settings.flag, actor=user_id)

    # -- the bulk-update service ----------------------------------------------------------------
    def start(
        self, operation_type: str, user_id: int | str, parameters: dict[str, Any] | None = None
    ) -> EnqueueResult:
        """Start an operation: enqueue its scheduler job. When tracked, the operation's id is
        the scheduler job's jid (``result.jid``), so a retried scheduler finds it again."""
        self.definition(operation_type)
        if isinstance(user_id, bool) or not isinstance(user_id, int | str) or user_id == "":
            raise ConfigurationError(
                f"user_id must be an int or a non-empty string, got {user_id!r}"
            )
        job = self.scheduler_job.set(queue=self.settings.queue)
        return job.perform_async(operation_type, user_id, dict(parameters or {}))

    # -- scheduler job --------------------------------------------------------------------------
    def schedule(
        self, jid: str, operation_type: str, user_id: int | str, parameters: dict[str, Any]
    ) -> str | None:
        """Collect the entities, create the operation and enqueue its batches; returns the
        operation id (``None`` on the legacy path or when there is nothing to do)."""
        definition = self.definition(operation_type)
        entities = list(definition.collect(parameters, user_id))
        if not entities:
            log.info("bulk operation %s: no entities, nothing to do", operation_type)
            return None
        size = definition.batch_size or self.settings.batch_size
        batches = [
            [e.to_json() for e in entities[i : i + size]] for i in range(0, len(entities), size)
        ]
        queue = self.settings.queue
        if not self.tracking_enabled(user_id):
            args = [[operation_type, n, batch, parameters] for n, batch in enumerate(batches)]
            self.legacy_batch_job.set(queue=queue).bulk_perform_async(args)
            return None
        store = self.store
        operation_id = jid
        outcome = store.open_operation(
            operation_id, operation_type, user_id, len(entities), parameters
        )
        if outcome == "finished":
            log.info("bulk operation %s finished already; not started again", operation_id)
            return operation_id
        done = store.counted_batches(operation_id) if outcome == "exists" else set()
        args = [
            [operation_id, operation_type, n, batch, parameters]
            for n, batch in enumerate(batches)
            if str(n) not in done
        ]
        job = self.batch_job.set(queue=queue, retry=self.settings.batch_retry)
        job.bulk_perform_async(args)
        log.info(
            "bulk operation %s (%s): %d items in %d batches",
            operation_id,
            operation_type,
            len(entities),
            len(batches),
        )
        return operation_id

    # -- batch jobs -----------------------------------------------------------------------------
    def run_batch(
        self,
        operation_id: str,
        operation_type: str,
        batch: int,
        entities: Sequence[dict[str, Any]],
        parameters: dict[str, Any],
    ) -> Counted:
        """Process a batch and count it once (one Redis round trip for the tracking)."""
        definition = self.definition(operation_type)
        store = self.store
        successful = 0
        failed: list[str] = []
        for data in entities:
            entity = Entity.from_json(data)
            error = _process_one(definition, entity, parameters)
            if error is None:
                successful += 1
            else:
                code, message = error
                failed.append(_failed(store, entity, message, code))
        return self._count(definition, operation_id, batch, successful, failed)

    def give_up_batch(self, args: Sequence[Any], exc: BaseException) -> None:
        """A batch job that will not be retried any more: count its entities as failed."""
        try:
            operation_id, operation_type, batch, entities = args[0], args[1], args[2], args[3]
        except (IndexError, TypeError):
            return
        message = f"the batch job gave up after its retries ({type(exc).__name__})"
        store = self.store
        failed = []
        for data in entities:
            failed.append(_failed(store, Entity.from_json(data), message, UNEXPECTED_ERROR))
        self._count(self.definitions.get(operation_type), operation_id, batch, 0, failed)

    def _count(
        self,
        definition: BulkOperation | None,
        operation_id: str,
        batch: int,
        successful: int,
        failed: list[str],
    ) -> Counted:
        live = self.app.testing.mode == "live"
        counted = self.store.record_batch(
            operation_id,
            str(batch),
            successful,
            failed,
            completion=self._completion(operation_id) if live else None,
        )
        if counted.outcome == "missing":
            log.warning(
                "bulk operation %s is gone (finished, deleted or expired); batch %d not counted",
                operation_id,
                batch,
            )
        elif counted.outcome == "duplicate":
            log.info("bulk operation %s: batch %d was counted already", operation_id, batch)
        elif counted.completed and not live:
            self.completion_job.set(queue=self.settings.queue).perform_async(operation_id)
        if definition is not None:
            definition.after_batch(operation_id, batch, counted.outcome)
        return counted

    def _completion(self, operation_id: str) -> CompletionPush:
        queue = self.settings.queue
        _, payload = self.app.client.build(self.completion_job, [operation_id], {"queue": queue})
        payload["enqueued_at"] = self.app.clock.time()
        return CompletionPush(queue, dumps(payload))

    def run_legacy_batch(
        self,
        operation_type: str,
        batch: int,
        entities: Sequence[dict[str, Any]],
        parameters: dict[str, Any],
    ) -> tuple[int, int]:
        """The untracked path: process the entities; failures are only logged (counted)."""
        definition = self.definition(operation_type)
        ok = bad = 0
        for data in entities:
            if _process_one(definition, Entity.from_json(data), parameters) is None:
                ok += 1
            else:
                bad += 1
        if bad:
            log.warning(
                "bulk %s batch %d: %d of %d items failed", operation_type, batch, bad, ok + bad
            )
        definition.after_batch(None, batch, "untracked")
        return ok, bad

    # -- completion job -------------------------------------------------------------------------
    def complete(self, operation_id: str) -> bool:
        """Send the failure e-mail (once) if anything failed, then delete the operation.
        Returns False when the operation was gone already, or stays (``notify_failed``)
        because its e-mail could not be delivered; an SMTP failure is re-raised so the
        completion job retries the delivery."""
        store = self.store
        op = store.get_operation(operation_id)
        if op is None:
            log.info("bulk operation %s finished already", operation_id)
            return False
        if op.failed_items and op.notified_at is None:
            try:
                delivered = self._notify(op)
            except MailError as exc:
                store.mark_notify_failed(operation_id, str(exc))
                log.warning(
                    "bulk operation %s: the failure e-mail could not be sent (%s); the "
                    "operation stays as notify_failed and the completion job retries",
                    operation_id,
                    exc,
                )
                raise
            if not delivered:
                store.mark_notify_failed(
                    operation_id, "no e-mail address was found for the operation's user"
                )
                log.warning(
                    "bulk operation %s had %d failed item(s) but no e-mail address was found "
                    "for its user; it stays as notify_failed until resent or dismissed "
                    "(conveyor ops resend|dismiss)",
                    op.id,
                    op.failed_items,
                )
                return False
            store.mark_notified(operation_id)
        store.finish_operation(operation_id)
        log.info(
            "bulk operation %s finished: %d succeeded, %d failed of %d",
            operation_id,
            op.successful_items,
            op.failed_items,
            op.total_items,
        )
        return True

    def _notify(self, op: Operation) -> bool:
        """Render and send the failure e-mail; False when the user has no address."""
        address = self.recipient(op.user) if self.recipient is not None else None
        if not address:
            return False
        settings = self.settings
        definition = self.definitions.get(op.operation_type)
        items = self.store.failed_items_page(op.id, 0, settings.max_failed_items_in_mail - 1)
        message = render_failure_email(
            op,
            items,
            base_url=settings.base_url,
            sender=settings.mail.sender,
            recipient=address,
            title=definition.label if definition else None,
            max_items=settings.max_failed_items_in_mail,
        )
        self.mailer(message)
        return True

    def _smtp(self, message: EmailMessage) -> None:
        send(message, self.settings.mail)


def _process_one(
    definition: BulkOperation, entity: Entity, parameters: dict[str, Any]
) -> tuple[str, str] | None:
    """``None`` on success, else (error code, message). The contract of ``process``: ``True``,
    ``None`` or a successful :class:`ServiceResult` is a success; ``False`` or an error
    result a ``service_error``; an exception or any other return value an
    ``unexpected_error`` of this item alone (the batch goes on), whose details go to the log
    and never to the user's e-mail."""
    try:
        result = definition.process(entity, parameters)
    except Exception as exc:
        log.error(
            "bulk operation %s: processing %s %s raised %s",
            definition.operation_type,
            entity.type,
            entity.id,
            type(exc).__name__,
            exc_info=True,
        )
        return UNEXPECTED_ERROR, f"{UNEXPECTED_MESSAGE} ({type(exc).__name__})"
    if result is None or result is True:
        return None
    if result is False:
        return SERVICE_ERROR, "the service reported a failure"
    if isinstance(result, ServiceResult):
        if result.ok:
            return None
        message = result.message or "the service returned an error"
        return SERVICE_ERROR, message[:MAX_ERROR_MESSAGE]
    log.error(
        "bulk operation %s: process() returned a %s for %s %s; return True/False, None or a "
        "ServiceResult",
        definition.operation_type,
        type(result).__name__,
        entity.type,
        entity.id,
    )
    return UNEXPECTED_ERROR, f"{UNEXPECTED_MESSAGE} (process() returned {type(result).__name__})"


def _failed(store: OperationStore, entity: Entity, message: str, code: str) -> str:
    return store.failed_item(
        entity_id=entity.id,
        entity_type=entity.type,
        entity_name=entity.name,
        entity_full_path=entity.full_path,
        error_message=message,
        error_code=code,
    )


#: The app's :class:`BulkOperations` in ``app.extensions``.
BULK_OPERATIONS: ExtensionKey[BulkOperations] = ExtensionKey("bulk_operations")

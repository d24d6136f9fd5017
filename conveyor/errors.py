"""Every exception Conveyor raises, in one tree.

ConveyorError
├── ConfigurationError        bad settings, bad job declaration
│   ├── UnknownOptionError    a job option no core feature or middleware declares
│   ├── AutomationSettingsError  an invalid automation settings file (every problem listed)
│   └── MissingLogContext     an import log line without its identifiers (development/test)
├── EnqueueError              a job that cannot be enqueued
│   ├── SerializationError    args that are not JSON-native
│   └── NotDurableError       a job written to the primary but not confirmed by min_replicas
├── PayloadError              a payload read from Redis that is not a valid job
├── UnknownJobClassError      a payload naming a class this process does not know
├── JobTimeoutError           a job that ran past its timeout
├── EmbeddedRedisError        the embedded Redis server could not start
├── NotFoundError             a data API lookup for something that is not there
│   └── WorkflowNotFound      a workflow that does not exist or is switched off
├── CompatibilityError        a job change unsafe across a rolling deploy (compat check)
├── OperationError            a bulk operation that cannot be created or counted
├── MailError                 an e-mail that could not be sent (SMTP)
├── UploadRejected            an uploaded file refused before anything was imported
├── ImportPipelineError       an import that cannot be started, found or continued
│   └── RecordError           one imported record that cannot be saved (recorded, not fatal)
├── WorkflowUrlError          an automation HTTP path that does not follow the URL grammar
├── WorkflowForbidden         a workflow the HTTP API may not run (allowApiExecution off)
└── LeaseError                a leader-election lease that cannot be opened, read or written
"""

from __future__ import annotations

from collections.abc import Sequence


class ConveyorError(Exception):
    """Base class of every Conveyor error."""


class ConfigurationError(ConveyorError):
    """Settings or a job declaration are invalid."""


class UnknownOptionError(ConfigurationError):
    """A job declares an option that neither the core nor any installed middleware knows."""


class AutomationSettingsError(ConfigurationError):
    """The ``functions.backend.automation`` settings are invalid.

    ``problems`` holds one line per bad field, each starting with the field's JSON path, e.g.
    ``functions.backend.automation.workflows[2].steps.execute.timeout: must be a positive
    number, got "fast"``; the message lists them all, so one run of ``conveyor automation check``
    shows everything to fix.
    """

    def __init__(self, problems: list[str] | tuple[str, ...], source: str = "") -> None:
        self.problems = tuple(problems)
        self.source = source
        where = f" in {source}" if source else ""
        count = len(self.problems)
        head = f"invalid automation settings{where} ({count} problem{'s' if count != 1 else ''}):"
        super().__init__("\n".join([head, *(f"  {p}" for p in self.problems)]))


class EnqueueError(ConveyorError):
    """A job could not be enqueued; nothing was written to Redis (except for the
    :class:`NotDurableError` subclass)."""


class SerializationError(EnqueueError):
    """Job arguments are not JSON-native values."""


class NotDurableError(EnqueueError):
    """Jobs were written to the Redis primary, but fewer than ``min_replicas`` replicas
    confirmed them in time, so a failover of the primary now could lose them.

    Unlike other :class:`EnqueueError` cases the jobs *were* pushed and normally run.
    ``jids`` are the unconfirmed jobs; ``confirmed`` the jids an earlier batch of the same
    bulk call pushed with the durability reached. Enqueueing ``jids`` again can run them twice.
    """

    def __init__(
        self,
        message: str,
        *,
        jids: Sequence[str] = (),
        confirmed: Sequence[str] = (),
        replicas: int = 0,
        required: int = 0,
    ) -> None:
        super().__init__(message)
        self.jids = tuple(jids)
        self.confirmed = tuple(confirmed)
        self.replicas = replicas
        self.required = required


class PayloadError(ConveyorError):
    """A payload fetched from Redis is not valid JSON or lacks required fields."""


class UnknownJobClassError(ConveyorError):
    """The payload names a job class this process has not registered.

    The job is retried with backoff rather than dropped: a newer deploy may know the class.
    """


class JobTimeoutError(ConveyorError):
    """A job ran longer than its ``timeout`` option allows."""


class EmbeddedRedisError(ConveyorError):
    """The embedded Redis server could not be started or reached."""


class NotFoundError(ConveyorError):
    """The data API was asked for a job, queue or process that does not exist."""


class OperationError(ConveyorError):
    """A tracked bulk operation could not be created or counted (bad id, totals, parameters)."""


class MailError(ConveyorError):
    """An e-mail could not be sent; the message names the SMTP server, never the recipient."""


class CompatibilityError(ConveyorError):
    """Job declarations changed in a way that breaks a rolling deploy, or a job lock file is
    unreadable (``conveyor compat check``)."""


class UploadRejected(ConveyorError):
    """An uploaded file was refused before anything was imported (size, type, or an archive
    entry that is unsafe). ``entry`` names the archive member at fault, when there is one."""

    def __init__(self, message: str, entry: str | None = None) -> None:
        super().__init__(message)
        self.entry = entry


class WorkflowUrlError(ConveyorError):
    """An automation HTTP path does not follow the URL grammar (``/{keyword}/workflows/{name}``,
    optional ``/steps/...`` and ``/vars/...``); the message names the bad segment."""

    def __init__(self, message: str, segment: str = "") -> None:
        self.segment = segment
        super().__init__(message)


class MissingLogContext(ConfigurationError):
    """An import log line lacks a key identifier (``importer``, ``import_id``, ``status`` or an
    id the logger was bound with). Raised in development and test mode only; production logs the
    line with a ``missing_context`` field instead (SPEC IMP-2). ``missing`` names the keys."""

    def __init__(self, message: str, missing: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.missing = missing


class LeaseError(ConveyorError):
    """A leader-election lease cannot be opened (bad type, path, bucket or credentials) or its
    backend failed (file system, S3 or Redis error); the message names the lease and the cause.
    A lease held by someone else is not an error: ``acquire`` returns ``None``."""


class ImportPipelineError(ConveyorError):
    """An import cannot be started, found or continued (unknown importer, bad id, bad options)."""


class RecordError(ImportPipelineError):
    """One imported record cannot be saved. The import records it as a failure (record id,
    stage, error class, message) and goes on; ``retryable`` says whether running the record
    again could succeed (a locked database) or not (bad data)."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class WorkflowNotFound(NotFoundError):
    """An automation workflow that does not exist, is disabled (``enable: false``), or belongs to
    an automation section that is switched off (``meta.enable: false``). The HTTP API answers
    404. ``workflow`` is the name asked for."""

    def __init__(self, message: str, workflow: str = "") -> None:
        super().__init__(message)
        self.workflow = workflow


class WorkflowForbidden(ConveyorError):
    """A client (HTTP API) call of a workflow without ``allowApiExecution: true``. The HTTP API
    answers 403. ``workflow`` is the name asked for."""

    def __init__(self, message: str, workflow: str = "") -> None:
        super().__init__(message)
        self.workflow = workflow

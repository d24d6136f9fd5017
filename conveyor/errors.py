"""Every exception Conveyor raises, in one tree.

ConveyorError
├── ConfigurationError        bad settings, bad job declaration
│   └── UnknownOptionError    a job option no core feature or middleware declares
├── EnqueueError              a job that cannot be enqueued
│   └── SerializationError    args that are not JSON-native
├── PayloadError              a payload read from Redis that is not a valid job
├── UnknownJobClassError      a payload naming a class this process does not know
├── JobTimeoutError           a job that ran past its timeout
├── EmbeddedRedisError        the embedded Redis server could not start
├── NotFoundError             a data API lookup for something that is not there
├── CompatibilityError        a job change unsafe across a rolling deploy (compat check)
├── OperationError            a bulk operation that cannot be created or counted
└── MailError                 an e-mail that could not be sent (SMTP)
"""

from __future__ import annotations


class ConveyorError(Exception):
    """Base class of every Conveyor error."""


class ConfigurationError(ConveyorError):
    """Settings or a job declaration are invalid."""


class UnknownOptionError(ConfigurationError):
    """A job declares an option that neither the core nor any installed middleware knows."""


class EnqueueError(ConveyorError):
    """A job could not be enqueued; nothing was written to Redis."""


class SerializationError(EnqueueError):
    """Job arguments are not JSON-native values."""


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

"""Settings of tracked bulk operations and of the SMTP server their failure e-mail goes through.

Both are frozen objects built explicitly; ``from_env`` reads ``CONVEYOR_SMTP_*`` and
``CONVEYOR_OPERATIONS_*`` variables only when called, never at import time.

>>> MailSettings.from_env({"CONVEYOR_SMTP_HOST": "smtp.example.com",
...                        "CONVEYOR_SMTP_SECURITY": "starttls"}).port
587
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeVar, cast

from conveyor.errors import ConfigurationError

Security = Literal["none", "starttls", "tls"]
SECURITIES: tuple[Security, ...] = ("none", "starttls", "tls")
#: The port each security mode uses when none is given.
DEFAULT_PORTS: Mapping[Security, int] = {"none": 25, "starttls": 587, "tls": 465}
#: The feature flag of SPEC OPS-4.
DEFAULT_FLAG = "security_bulk_operations_notifications"

N = TypeVar("N", int, float)


@dataclass(frozen=True)
class MailSettings:
    """How to reach the SMTP server.

    ``security``: ``"none"`` (plain SMTP), ``"starttls"`` (upgrade after connecting, port 587)
    or ``"tls"`` (implicit TLS, port 465). ``port=0`` picks the usual port for the mode.
    Certificates are verified against the system store, or ``ca_file`` when given.
    """

    host: str = "localhost"
    port: int = 0
    security: Security = "none"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    #: The From address of every e-mail.
    sender: str = "conveyor@localhost"
    timeout: float = 30.0
    ca_file: str | None = None

    def __post_init__(self) -> None:
        if self.security not in SECURITIES:
            raise ConfigurationError(
                f"SMTP security {self.security!r} is unknown; use 'none', 'starttls' or 'tls'"
            )
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ConfigurationError(
                f"SMTP port must be 0-65535 (0: the default), got {self.port!r}"
            )
        if not self.host:
            raise ConfigurationError("SMTP host is empty; set CONVEYOR_SMTP_HOST, e.g. localhost")
        if "@" not in self.sender:
            raise ConfigurationError(
                f"SMTP sender {self.sender!r} is not an e-mail address; set CONVEYOR_SMTP_SENDER"
            )
        if (self.username is None) != (self.password is None):
            raise ConfigurationError(
                "SMTP authentication needs both a username and a password "
                "(CONVEYOR_SMTP_USERNAME and CONVEYOR_SMTP_PASSWORD), or neither"
            )
        if self.timeout <= 0:
            raise ConfigurationError(f"SMTP timeout must be seconds > 0, got {self.timeout!r}")

    @property
    def effective_port(self) -> int:
        return self.port or DEFAULT_PORTS[self.security]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> MailSettings:
        """From ``CONVEYOR_SMTP_HOST``, ``_PORT``, ``_SECURITY``, ``_USERNAME``, ``_PASSWORD``,
        ``_SENDER``, ``_TIMEOUT`` and ``_CA_FILE`` (unset: the defaults)."""
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = env.get(f"CONVEYOR_SMTP_{name}")
            return value if value else None

        security = (get("SECURITY") or "none").lower()
        return cls(
            host=get("HOST") or "localhost",
            port=_number(int, "CONVEYOR_SMTP_PORT", get("PORT"), 0),
            security=cast(Security, security),
            username=get("USERNAME"),
            password=get("PASSWORD"),
            sender=get("SENDER") or "conveyor@localhost",
            timeout=_number(float, "CONVEYOR_SMTP_TIMEOUT", get("TIMEOUT"), 30.0),
            ca_file=get("CA_FILE"),
        )


@dataclass(frozen=True)
class OperationsSettings:
    """How bulk operations run.

    >>> OperationsSettings(base_url="https://gitlab.example.com").batch_size
    100
    """

    #: Links in the e-mail are ``base_url`` + ``/`` + the entity's full path.
    base_url: str = "http://localhost"
    #: The feature flag turning tracking and e-mail on (off: the legacy untracked path).
    flag: str = DEFAULT_FLAG
    #: Entities per batch job.
    batch_size: int = 100
    #: Queue of the scheduler, batch and completion jobs.
    queue: str = "default"
    #: At most this many failed items are listed in an e-mail (the rest are counted).
    max_failed_items_in_mail: int = 1000
    #: Retries of a batch job whose bookkeeping failed (its items' own errors are not retried).
    batch_retry: int = 5
    mail: MailSettings = field(default_factory=MailSettings)

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ConfigurationError(
                f"base_url {self.base_url!r} must start with http:// or https://; set "
                "CONVEYOR_OPERATIONS_BASE_URL, e.g. https://gitlab.example.com"
            )
        if not isinstance(self.batch_size, int) or not 1 <= self.batch_size <= 5000:
            raise ConfigurationError(f"batch_size must be 1-5000, got {self.batch_size!r}")
        if self.max_failed_items_in_mail < 1:
            raise ConfigurationError(
                f"max_failed_items_in_mail must be >= 1, got {self.max_failed_items_in_mail!r}"
            )
        if not self.flag or not self.queue:
            raise ConfigurationError("the operations flag name and queue must not be empty")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperationsSettings:
        """From ``CONVEYOR_OPERATIONS_BASE_URL``, ``_FLAG``, ``_BATCH_SIZE``, ``_QUEUE`` and the
        ``CONVEYOR_SMTP_*`` variables."""
        env = os.environ if env is None else env
        defaults = cls()

        def get(name: str) -> str | None:
            value = env.get(f"CONVEYOR_OPERATIONS_{name}")
            return value if value else None

        return cls(
            base_url=get("BASE_URL") or defaults.base_url,
            flag=get("FLAG") or defaults.flag,
            batch_size=_number(
                int, "CONVEYOR_OPERATIONS_BATCH_SIZE", get("BATCH_SIZE"), defaults.batch_size
            ),
            queue=get("QUEUE") or defaults.queue,
            mail=MailSettings.from_env(env),
        )


def _number(kind: type[N], name: str, raw: str | None, default: N) -> N:
    if raw is None:
        return default
    try:
        return kind(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not a valid {kind.__name__}") from None

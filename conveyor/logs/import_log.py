"""The import logging contract (SPEC IMP-2): every line of an import names the importer, the
import and the status; one line per imported record; a missing identifier raises in development
and test mode and is flagged with ``missing_context`` in production.

Usage from an importer::

    log = import_logger("project_export", import_id, project_id=project.id)
    log.info("stage started", stage="issues", status="running")
    log_record(log, "issue", issue_id, "imported")
"""

from __future__ import annotations

from typing import Any

import structlog

from conveyor.logs import config

#: Every import log line must carry these.
REQUIRED_KEYS = ("importer", "import_id", "status")

#: Status values used by Conveyor's import toolkit (others are allowed).
STATUSES = (
    "started",
    "running",
    "imported",
    "skipped",
    "failed",
    "retrying",
    "deferred",
    "finished",
)


def import_logger(
    importer: str, import_id: str | int | None, **ids: Any
) -> structlog.stdlib.BoundLogger:
    """A structlog logger for one import: every line carries ``importer`` and ``import_id`` and
    the ``ids`` given here, and must be given a ``status``.

    >>> log = import_logger("project_export", "imp-42", project_id=7)
    >>> log.info("archive validated", status="running")   # doctest: +SKIP
    >>> log.info("archive validated")                      # doctest: +SKIP
    Traceback (most recent call last):
    conveyor.errors.MissingLogContext: import log line 'archive validated' lacks status; ...
    """
    return config.get_logger("conveyor.imports").bind(
        importer=importer,
        import_id=import_id,
        **ids,
        **{config.REQUIRE: (*REQUIRED_KEYS, *ids)},
    )


def log_record(
    logger: structlog.stdlib.BoundLogger,
    record_type: str,
    record_id: str | int | None,
    status: str,
    **fields: Any,
) -> None:
    """The one line per imported record: ``record_type``, ``record_id`` and ``status`` (at
    warning level when the status is ``"failed"``). ``fields`` must not hold personal data;
    values under personal or secret key names are redacted anyway.

    >>> log_record(log, "issue", 1234, "imported", stage="issues")   # doctest: +SKIP
    """
    method = logger.warning if status == "failed" else logger.info
    method(
        "record",
        record_type=record_type,
        record_id=record_id,
        status=status,
        **fields,
        **{config.REQUIRE_LINE: ("record_type", "record_id")},
    )

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
from structlog.typing import EventDict, WrappedLogger

from conveyor.errors import MissingLogContext
from conveyor.logs import config

#: Every import log line must carry these.
REQUIRED_KEYS = ("importer", "import_id", "status")
#: Bound by :func:`import_logger`: the extra id names this logger promised on every line.
_REQUIRE = "_conveyor_import_require"
#: Passed per call by :func:`log_record`: ids that one line must carry.
_REQUIRE_LINE = "_conveyor_line_require"

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


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def check_import_context(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Processor: for lines of an :func:`import_logger`, check the key identifiers are there.

    Raises :class:`~conveyor.errors.MissingLogContext` in development/test mode; in production
    adds ``missing_context: [names]`` and lets the line through."""
    promised = event_dict.pop(_REQUIRE, None)
    per_line = event_dict.pop(_REQUIRE_LINE, None)
    if promised is None and per_line is None:
        return event_dict
    names = [*REQUIRED_KEYS, *(promised or ()), *(per_line or ())]
    missing = tuple(name for name in dict.fromkeys(names) if _missing(event_dict.get(name)))
    if not missing:
        return event_dict
    if config.strict():
        raise MissingLogContext(_hint(str(event_dict.get("event")), missing), missing)
    event_dict["missing_context"] = list(missing)
    return event_dict


def _hint(event: str, missing: tuple[str, ...]) -> str:
    """The error for a line lacking ``missing``, with the fix for exactly those keys."""
    fixes = []
    if "status" in missing:
        fixes.append(f"pass the status on the call: log.info({event!r}, status='running')")
    bound = [m for m in missing if m in ("importer", "import_id")]
    if bound:
        fixes.append(
            f"give {' and '.join(bound)} to import_logger(importer, import_id) (a value, not "
            "None or '')"
        )
    record = [m for m in missing if m in ("record_type", "record_id")]
    if record:
        fixes.append(
            f"give {' and '.join(record)}: log_record(log, record_type, record_id, status)"
        )
    promised = [m for m in missing if m not in (*REQUIRED_KEYS, "record_type", "record_id")]
    if promised:
        fixes.append(
            f"pass {', '.join(promised)} on the call: import_logger(...) promised "
            f"{'it' if len(promised) == 1 else 'them'} on every line"
        )
    return f"import log line {event!r} lacks {', '.join(missing)}; " + "; ".join(fixes)


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
        importer=importer, import_id=import_id, **ids, **{_REQUIRE: tuple(ids)}
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
        **{_REQUIRE_LINE: ("record_type", "record_id")},
    )

"""Structured logging for Conveyor (SPEC IMP-2): one JSON object per line (or readable text),
from structlog and stdlib loggers alike, with personal data scrubbed from every line.

Call :func:`configure` once at process start (``conveyor worker`` does); use
:func:`import_logger` and :func:`log_record` in importers. See docs/logging.md.
"""

from __future__ import annotations

from conveyor.logs.config import (
    ENVIRONMENTS,
    add_context,
    bind_process,
    configure,
    environment,
    get_logger,
    job_context,
    make_formatter,
    resolve_format,
    set_environment,
    strict,
    unbind_process,
)
from conveyor.logs.import_log import REQUIRED_KEYS, STATUSES, import_logger, log_record
from conveyor.logs.scrub import (
    PERSONAL_KEYS,
    SECRET_KEY_PARTS,
    Scrubber,
    default_scrubber,
    register_personal_keys,
)

__all__ = [
    "ENVIRONMENTS",
    "PERSONAL_KEYS",
    "REQUIRED_KEYS",
    "SECRET_KEY_PARTS",
    "STATUSES",
    "Scrubber",
    "add_context",
    "bind_process",
    "configure",
    "default_scrubber",
    "environment",
    "get_logger",
    "import_logger",
    "job_context",
    "log_record",
    "make_formatter",
    "register_personal_keys",
    "resolve_format",
    "set_environment",
    "strict",
    "unbind_process",
]

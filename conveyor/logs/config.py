"""One logging pipeline for structlog loggers and stdlib ``logging`` calls alike: context (job,
worker), level, logger name, ISO UTC timestamp, personal-data scrubbing, then JSON (one object per
line) or readable text. Installed once per process by :func:`configure`."""

from __future__ import annotations

import contextvars
import json
import logging
import os
import sys
from collections.abc import Mapping
from typing import IO, TYPE_CHECKING, Any

import structlog
from structlog.stdlib import ProcessorFormatter
from structlog.typing import EventDict, Processor, WrappedLogger

from conveyor.errors import ConfigurationError, MissingLogContext
from conveyor.logs import scrub

if TYPE_CHECKING:
    from conveyor.settings import Settings

ENVIRONMENTS = ("development", "test", "production")
FORMATS = ("auto", "json", "text")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

#: Marks an event already scrubbed on the structlog side (only its traceback is left to do).
_SCRUBBED = "_conveyor_scrubbed"
#: Keys that hold exception or stack objects until the formatter renders them as text.
_DEFERRED = ("exc_info", "stack_info")
_RENDERED = ("exception", "stack", "stack_info")
_FIRST = ("timestamp", "level", "logger", "event")

#: The explicit environment (set_environment), if any; a dict, not a rebound global.
_state: dict[str, str | None] = {"environment": None}
_process_context: dict[str, Any] = {}
#: The running job's payload and queue; its log fields are made only when a line is logged.
_job_context: contextvars.ContextVar[tuple[Mapping[str, Any], str] | None] = contextvars.ContextVar(
    "conveyor_job_log_context", default=None
)


# -- environment ------------------------------------------------------------------------------
def set_environment(env: str | None) -> str | None:
    """Set ``"development"``, ``"test"`` or ``"production"`` for this process (``None``: go back
    to reading ``CONVEYOR_ENV``); returns the previous explicit value.

    >>> previous = set_environment("production")
    >>> environment()
    'production'
    >>> _ = set_environment(previous)
    """
    if env is not None and env not in ENVIRONMENTS:
        raise ConfigurationError(f"environment {env!r} is not one of {', '.join(ENVIRONMENTS)}")
    previous, _state["environment"] = _state["environment"], env
    return previous


def environment() -> str:
    """The explicit environment, else ``CONVEYOR_ENV``, else ``"production"`` (an unknown value
    counts as production: logging must never be the thing that breaks a deploy)."""
    explicit = _state["environment"]
    if explicit is not None:
        return explicit
    env = os.environ.get("CONVEYOR_ENV", "").strip().lower()
    return env if env in ENVIRONMENTS else "production"


def strict() -> bool:
    """True in development and test mode, where a log contract violation raises."""
    return environment() != "production"


# -- context ----------------------------------------------------------------------------------
def bind_process(**values: Any) -> None:
    """Add fields to every line this process logs, from any thread (e.g. ``worker=identity``).

    >>> bind_process(worker="host:1234:abc")        # doctest: +SKIP
    """
    _process_context.update({k: v for k, v in values.items() if v is not None})


def unbind_process(*keys: str) -> None:
    for key in keys:
        _process_context.pop(key, None)


class job_context:
    """Every line logged by this thread (or task) inside the block carries the job's ``jid``,
    ``class`` and ``queue`` (never its arguments). A class, not a generator context manager:
    it is entered once per job on the hot path.

    >>> with job_context({"jid": "abc", "class": "Ping", "args": [1]}, "default"):
    ...     add_context(None, "info", {})["jid"]
    'abc'
    """

    __slots__ = ("_token", "_value")

    def __init__(self, job: Mapping[str, Any], queue: str) -> None:
        self._value = (job, queue)

    def __enter__(self) -> None:
        self._token = _job_context.set(self._value)

    def __exit__(self, *_exc: object) -> None:
        _job_context.reset(self._token)


def add_context(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Processor: process-wide and job fields, without overriding what the call passed."""
    running = _job_context.get()
    job = None
    if running is not None:
        payload, queue = running
        job = {"jid": payload.get("jid"), "class": payload.get("class"), "queue": queue}
    for source in (job, _process_context):
        if source:
            for key, value in source.items():
                event_dict.setdefault(key, value)
    event_dict.setdefault("pid", os.getpid())
    return event_dict


# -- scrubbing processors ---------------------------------------------------------------------
def scrub_event(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Processor (structlog side): scrub every value except exception objects, which the
    formatter renders to text and scrubs afterwards."""
    deferred = {k: event_dict.pop(k) for k in _DEFERRED if k in event_dict}
    clean = scrub.default_scrubber().safe_scrub(event_dict)
    clean.update(deferred)
    clean[_SCRUBBED] = True
    return clean


def scrub_final(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Processor (formatter side): scrub a stdlib record's event entirely, or only the rendered
    traceback of an event the structlog side scrubbed already."""
    scrubber = scrub.default_scrubber()
    if not event_dict.pop(_SCRUBBED, False):
        return scrubber.safe_scrub(event_dict)
    for key in _RENDERED:
        value = event_dict.get(key)
        if isinstance(value, str):
            try:
                event_dict[key] = scrubber.scrub_text(value)
            except Exception:
                event_dict[key] = "[traceback dropped: scrubbing failed]"
    return event_dict


def _ordered(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    head = {k: event_dict.pop(k) for k in _FIRST if k in event_dict}
    head.update(event_dict)
    return head


# -- chains -----------------------------------------------------------------------------------
_timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp")


def _common() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        add_context,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        _timestamper,
    ]


#: Bound on a logger (e.g. by :func:`conveyor.logs.import_logger`): the names every one of its
#: lines must carry.
REQUIRE = "_conveyor_require"
#: Passed on one call (e.g. by :func:`conveyor.logs.log_record`): names that line must carry.
REQUIRE_LINE = "_conveyor_line_require"


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def check_required_context(
    _logger: WrappedLogger, _method: str, event_dict: EventDict
) -> EventDict:
    """Processor: a line whose logger promised context names (:data:`REQUIRE`,
    :data:`REQUIRE_LINE`) must carry them. Raises
    :class:`~conveyor.errors.MissingLogContext` in development/test mode; in production adds
    ``missing_context: [names]`` and lets the line through."""
    promised = event_dict.pop(REQUIRE, None)
    per_line = event_dict.pop(REQUIRE_LINE, None)
    if promised is None and per_line is None:
        return event_dict
    names = [*(promised or ()), *(per_line or ())]
    missing = tuple(name for name in dict.fromkeys(names) if _missing(event_dict.get(name)))
    if not missing:
        return event_dict
    if strict():
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
    named = ("importer", "import_id", "status", "record_type", "record_id")
    promised = [m for m in missing if m not in named]
    if promised:
        fixes.append(
            f"pass {', '.join(promised)} on the call: the logger promised "
            f"{'it' if len(promised) == 1 else 'them'} on every line"
        )
    return f"import log line {event!r} lacks {', '.join(missing)}; " + "; ".join(fixes)


def structlog_processors() -> list[Processor]:
    """The processors a Conveyor structlog logger runs in the caller's thread (so a contract
    check raises where the bad call is), ending with the hand-over to stdlib logging."""
    return [
        *_common(),
        structlog.stdlib.PositionalArgumentsFormatter(),
        check_required_context,
        scrub_event,
        ProcessorFormatter.wrap_for_formatter,
    ]


def _drop_color_message(logger: Any, method: str, event: EventDict) -> EventDict:
    event.pop("color_message", None)
    return event


class RequestLineFilter(logging.Filter):
    """uvicorn's access lines (``uvicorn.access``) without the client's address and the query
    string: the first is personal data, the second often carries it. (``conveyor web`` turns
    these lines off and writes its own, with route templates instead of paths.)"""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
            path = str(args[2]).split("?", 1)[0]
            record.args = ("-", args[1], path, args[3], args[4])
        return True


def make_formatter(fmt: str = "json") -> ProcessorFormatter:
    """A stdlib :class:`logging.Formatter` that renders structlog events and plain stdlib
    records the same way: ``"json"`` (one object per line) or ``"text"``."""
    if fmt not in ("json", "text"):
        raise ConfigurationError(f"log format {fmt!r} is not 'json' or 'text'")
    renderer: Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(
            serializer=json.dumps, ensure_ascii=False, default=str
        )
    else:
        renderer = structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=structlog.dev.plain_traceback
        )
    return ProcessorFormatter(
        # uvicorn's ``color_message`` extra is its message again with terminal colours.
        foreign_pre_chain=[*_common(), structlog.stdlib.ExtraAdder(), _drop_color_message],
        processors=[
            ProcessorFormatter.remove_processors_meta,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            scrub_final,
            _ordered,
            renderer,
        ],
    )


def get_logger(name: str = "conveyor", **initial: Any) -> structlog.stdlib.BoundLogger:
    """A structlog logger that goes through Conveyor's pipeline whether or not
    :func:`configure` (or anybody else's ``structlog.configure``) ran.

    >>> log = get_logger("conveyor.imports", importer="project")
    >>> log.info("archive opened", status="running")   # doctest: +SKIP
    """
    logger: structlog.stdlib.BoundLogger = structlog.wrap_logger(
        logging.getLogger(name),
        processors=structlog_processors(),
        wrapper_class=structlog.stdlib.BoundLogger,
        **initial,
    )
    return logger


# -- configure --------------------------------------------------------------------------------
def resolve_format(fmt: str, stream: IO[str]) -> str:
    """``"auto"`` is text on a terminal and JSON anywhere else (files, pipes, supervisors)."""
    if fmt == "auto":
        isatty = getattr(stream, "isatty", None)
        return "text" if isatty is not None and isatty() else "json"
    return fmt


def _hash_key(explicit: bytes | str | None) -> bytes | None:
    value = explicit if explicit is not None else os.environ.get("CONVEYOR_LOG_HASH_KEY")
    if not value:
        return None
    return value.encode() if isinstance(value, str) else value


def configure(
    settings: Settings | None = None,
    *,
    stream: IO[str] | None = None,
    hash_key: bytes | str | None = None,
) -> logging.Handler:
    """Send every log line of this process (structlog and stdlib) through one handler on the
    root logger, formatted per ``settings.log_format`` at ``settings.log_level``. Calling it
    again replaces the handler it installed before; handlers installed by others are kept.

    ``hash_key`` (or ``CONVEYOR_LOG_HASH_KEY``) makes redactions short keyed hashes.

    >>> configure(Settings(log_format="json"))          # doctest: +SKIP
    """
    from conveyor.settings import Settings

    settings = settings or Settings.load()
    if settings.env:
        set_environment(settings.env)
    out = stream or sys.stderr
    fmt = resolve_format(settings.log_format, out)
    key = _hash_key(hash_key)
    scrub.default_scrubber().hash_key = key

    handler = logging.StreamHandler(out)
    handler.setFormatter(make_formatter(fmt))
    handler.addFilter(RequestLineFilter())
    handler.setLevel(settings.log_level.upper())  # even where a logger was made more verbose
    handler._conveyor_logs = True  # type: ignore[attr-defined]
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_conveyor_logs", False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    structlog.configure(
        processors=structlog_processors(),
        wrapper_class=structlog.stdlib.BoundLogger,
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
    return handler

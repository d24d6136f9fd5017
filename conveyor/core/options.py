"""Job options checked once, with one message per mistake, whether they come from a class
attribute, ``@app.job(...)`` or ``.set(...)``.

Each option has a check that returns the normalized value or raises
:class:`~conveyor.errors.ConfigurationError` naming the job, the option, the bad value and what
to write instead. The core's checks live here; a middleware checks the options it declares in
:meth:`~conveyor.core.middleware.Middleware.check_option`. Seconds are accepted as numbers or
:class:`datetime.timedelta` everywhere.

>>> normalize_options("Report", {"timeout": dt.timedelta(minutes=2)}, frozenset({"timeout"}), {})
{'timeout': 120.0}
>>> normalize_options("Report", {"queue": 3}, frozenset({"queue"}), {})
Traceback (most recent call last):
conveyor.errors.ConfigurationError: Report: queue=3 must be a non-empty string, e.g. queue="low"
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from typing import Any

from conveyor.errors import ConfigurationError, UnknownOptionError
from conveyor.routing import check_store_name

#: ``(job name, option, value) -> normalized value``; raises ConfigurationError.
OptionCheck = Callable[[str, str, Any], Any]

#: Options only ``.set()`` takes: facts about one enqueued job, not about its class.
ENQUEUE_OPTIONS = frozenset({"wal_locations"})

_LSN = re.compile(r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$")


def seconds(value: Any, what: str, *, allow_none: bool = True) -> float | None:
    """``value`` as float seconds > 0 (a number or a timedelta), else ConfigurationError.

    >>> seconds(dt.timedelta(hours=1), "ttl")
    3600.0
    """
    if value is None and allow_none:
        return None
    if isinstance(value, dt.timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigurationError(
            f"{what}={value!r} must be a number of seconds > 0 (or a datetime.timedelta)"
        )
    return float(value)


def check_known(name: str, options: Mapping[str, Any], known: frozenset[str]) -> None:
    """Refuse options that neither the core nor any installed middleware declares.

    >>> check_known("Report", {"queue": "low"}, frozenset({"queue"}))
    """
    unknown = sorted(set(options) - known)
    if unknown:
        raise UnknownOptionError(
            f"{name}: unknown job option(s) {', '.join(unknown)}; known options: "
            f"{', '.join(sorted(known))} (middleware declare their own options)"
        )


def normalize_options(
    name: str,
    options: Mapping[str, Any],
    known: frozenset[str],
    checks: Mapping[str, OptionCheck],
) -> dict[str, Any]:
    """``options`` checked (names, then values) and normalized; ``checks`` adds the
    middleware's checks to the core's."""
    check_known(name, options, known)
    out: dict[str, Any] = {}
    for option, value in options.items():
        check = CORE_CHECKS.get(option) or checks.get(option)
        out[option] = value if check is None else check(name, option, value)
    return out


# -- the core's checks ----------------------------------------------------------------------------
def _queue(name: str, option: str, value: Any) -> Any:
    if not isinstance(value, str) or not value:
        raise ConfigurationError(
            f'{name}: {option}={value!r} must be a non-empty string, e.g. {option}="low"'
        )
    return value


def _optional_queue(name: str, option: str, value: Any) -> Any:
    return None if value is None else _queue(name, option, value)


def _name(name: str, option: str, value: Any) -> Any:
    return None if value is None else _queue(name, option, value)


def _retry(name: str, option: str, value: Any) -> Any:
    if not isinstance(value, bool | int) or (not isinstance(value, bool) and value < 0):
        raise ConfigurationError(
            f"{name}: {option}={value!r} must be True, False or a count >= 0 (e.g. retry=5)"
        )
    return value


def _flag(name: str, option: str, value: Any) -> Any:
    if not isinstance(value, bool):
        raise ConfigurationError(f"{name}: {option}={value!r} must be True or False")
    return value


def _backtrace(name: str, option: str, value: Any) -> Any:
    if not isinstance(value, bool | int) or (not isinstance(value, bool) and value < 0):
        raise ConfigurationError(
            f"{name}: {option}={value!r} must be True, False or a number of lines >= 0"
        )
    return value


def _timeout(name: str, option: str, value: Any) -> Any:
    return seconds(value, f"{name}: {option}")


def _interruptions(name: str, option: str, value: Any) -> Any:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < -1):
        raise ConfigurationError(f"{name}: {option}={value!r} must be an int >= -1 (-1 disables)")
    return value


def _names(name: str, option: str, value: Any) -> Any:
    if isinstance(value, str) or not isinstance(value, list | tuple | set | frozenset):
        raise ConfigurationError(
            f"{name}: {option}={value!r} must be a list of strings, e.g. {option}=[{value!r}]"
            if isinstance(value, str)
            else f"{name}: {option}={value!r} must be a list of strings"
        )
    bad = [v for v in value if not isinstance(v, str) or not v]
    if bad:
        raise ConfigurationError(
            f"{name}: {option} holds {bad[0]!r}, which is not a non-empty string"
        )
    return tuple(value)


def _wal_locations(name: str, option: str, value: Any) -> Any:
    """``{database name: LSN}`` as PostgreSQL writes an LSN (``'16/B374D848'``)."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            f"{name}: {option}={value!r} must be a dict of database name -> LSN, e.g. "
            "{'main': '16/B374D848'}"
        )
    for db, lsn in value.items():
        if not isinstance(db, str) or not db or not isinstance(lsn, str) or not _LSN.match(lsn):
            raise ConfigurationError(
                f"{name}: {option} has {db!r}: {lsn!r}; each entry must be a database name and "
                "an LSN such as '16/B374D848' (pg_current_wal_insert_lsn())"
            )
    return dict(value)


def _store(name: str, option: str, value: Any) -> Any:
    return None if value is None else check_store_name(value, f"{name}: {option}=")


CORE_CHECKS: Mapping[str, OptionCheck] = {
    "name": _name,
    "queue": _queue,
    "retry": _retry,
    "dead": _flag,
    "backtrace": _backtrace,
    "timeout": _timeout,
    "retry_queue": _optional_queue,
    "max_retries_after_interruption": _interruptions,
    "aliases": _names,
    "tags": _names,
    "check_args": _flag,
    "wal_locations": _wal_locations,
    "store": _store,
}

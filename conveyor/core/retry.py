"""What happens to a job that raised (SPEC CORE-5): the next retry time, or the dead set.

The retry state lives in the payload, as in Sidekiq: ``retry_count``, ``error_message``,
``error_class``, ``failed_at``, ``retried_at`` and an optional compressed ``error_backtrace``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import math
import random
import traceback
import zlib
from dataclasses import dataclass
from typing import Literal

from conveyor.core.job import Job
from conveyor.core.payload import Payload, queue_of
from conveyor.errors import UnknownJobClassError
from conveyor.settings import Settings

MAX_MESSAGE = 10_000

log = logging.getLogger("conveyor.retry")


@dataclass(frozen=True, slots=True)
class Decision:
    """``retry`` at ``score``; ``dead`` (score = now); ``discard`` (dropped, counted as failed)."""

    kind: Literal["retry", "dead", "discard"]
    score: float
    job: Payload


def default_backoff(count: int, rng: random.Random | None = None) -> float:
    """Seconds before retry number ``count + 1``: ``count**4 + 15 + rand(10 * (count + 1))``."""
    r = rng or random
    return float(count**4 + 15 + r.randrange(10 * (count + 1)))


def error_class_name(exc: BaseException) -> str:
    cls = type(exc)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )


def compress_backtrace(lines: list[str]) -> str:
    """Sidekiq's encoding: Base64 of zlib-deflated JSON (its Web UI can show it)."""
    return base64.encodebytes(zlib.compress(json.dumps(lines).encode())).decode()


def decompress_backtrace(text: str) -> list[str]:
    lines: list[str] = json.loads(zlib.decompress(base64.b64decode(text)))
    return lines


def backtrace_lines(exc: BaseException) -> list[str]:
    """Innermost frame first, as Ruby prints them: ``path:line:in `function'``."""
    frames = traceback.extract_tb(exc.__traceback__)
    return [f"{f.filename}:{f.lineno}:in `{f.name}'" for f in reversed(frames)]


def decide(
    job: Payload,
    exc: BaseException,
    *,
    queue: str,
    now: float,
    settings: Settings,
    instance: Job | None,
    rng: random.Random | None = None,
) -> Decision:
    """Record the failure in ``job`` (mutated) and decide where it goes next."""
    unknown_class = isinstance(exc, UnknownJobClassError)
    retry = job.get("retry", True)
    if unknown_class and (retry is False or retry == 0):
        # Never drop a job only a newer deploy may know: give it the default retries.
        retry = True
    if retry is False or retry is None:
        return Decision("discard", now, job)
    max_attempts = (
        retry if isinstance(retry, int) and not isinstance(retry, bool) else settings.max_retries
    )

    job["queue"] = job.get("retry_queue") or queue_of(job, queue)
    job["error_message"] = error_message(exc)
    job["error_class"] = error_class_name(exc)
    if isinstance(job.get("retry_count"), int):
        job["retried_at"] = now
        job["retry_count"] += 1
    else:
        job["failed_at"] = now
        job["retry_count"] = 0
    count: int = job["retry_count"]

    _record_backtrace(job, exc)

    if count < max_attempts:
        delay = _hook_delay(instance, count, exc, job)
        if delay == "kill":
            return _exhausted(job, exc, now, instance, force_dead=True)
        if delay == "discard":
            return Decision("discard", now, job)
        if delay is None:
            delay = default_backoff(count, rng)
        return Decision("retry", now + float(delay), job)
    return _exhausted(job, exc, now, instance, force_dead=unknown_class)


def _record_backtrace(job: Payload, exc: BaseException) -> None:
    backtrace = job.get("backtrace")
    if backtrace:
        lines = backtrace_lines(exc)
        if not isinstance(backtrace, bool) and isinstance(backtrace, int):
            lines = lines[:backtrace]
        job["error_backtrace"] = compress_backtrace(lines)


def error_message(exc: BaseException) -> str:
    """``str(exc)`` made safe to store: at most :data:`MAX_MESSAGE` characters, lone
    surrogates (e.g. from ``os.fsdecode`` of a bad file name) escaped, and the class name when
    ``__str__`` is empty or itself raises.

    >>> error_message(OSError("report-\udcff.csv"))
    'report-\\udcff.csv'
    """
    try:
        text = str(exc)
    except Exception:
        text = ""
    text = text[:MAX_MESSAGE] or error_class_name(exc)
    if not text.isascii():
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _hook_delay(
    instance: Job | None, count: int, exc: BaseException, job: Payload
) -> float | str | None:
    if instance is None:
        return None
    name = type(instance).__name__
    try:
        delay = instance.retry_in(count, exc, job)
    except Exception:  # a broken hook must not lose the job: use the default backoff
        log.exception("%s.retry_in raised; using the default backoff", name)
        return None
    if delay is None or (isinstance(delay, str) and delay in ("kill", "discard")):
        return delay
    if isinstance(delay, int | float) and not isinstance(delay, bool) and math.isfinite(delay):
        return max(0.0, float(delay))
    log.warning(
        "%s.retry_in returned %.60r, not seconds, 'kill', 'discard' or None; using the "
        "default backoff",
        name,
        delay,
    )
    return None


def _exhausted(
    job: Payload, exc: BaseException, now: float, instance: Job | None, *, force_dead: bool
) -> Decision:
    if instance is not None:
        with contextlib.suppress(Exception):  # the job still goes to the dead set
            instance.retries_exhausted(job, exc)
    if job.get("dead") is False and not force_dead:
        return Decision("discard", now, job)
    return Decision("dead", now, job)

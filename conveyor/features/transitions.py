"""Job options for changes that span several releases (SPEC COMPAT-3, COMPAT-5).

``deprecated=True``: the class becomes a no-op that still accepts any arguments, so jobs still
queued when it is retired finish quietly instead of failing. Its ``perform`` is not called::

    @app.job(deprecated=True)            # release M: nobody enqueues it any more
    class ExampleWorker(Job):
        def perform(self, object_id: int) -> None: ...

``enqueue_as``: a renamed class answers both names (``aliases``) and producers keep enqueueing
the old name until a feature flag says every node knows the new one::

    @app.job(aliases=("OldWorker",), enqueue_as=enqueue_as("OldWorker", flag="new_worker_name"))
    class NewWorker(Job): ...

See docs/compat.md for the release sequences.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from conveyor.core.middleware import ClientMiddleware, EnqueueContext, JobContext, ServerMiddleware
from conveyor.errors import ConfigurationError
from conveyor.features.flags import Flags, check_name

if TYPE_CHECKING:
    from conveyor.core.app import App
    from conveyor.core.job import Job

log = logging.getLogger("conveyor.transitions")


@dataclass(frozen=True)
class EnqueueAs:
    """Enqueue under the ``old`` name while feature flag ``flag`` is off."""

    old: str
    flag: str


def enqueue_as(old: str, *, flag: str) -> EnqueueAs:
    """The producer switch of a renamed class, checked at once.

    >>> enqueue_as("OldWorker", flag="new_worker_name")
    EnqueueAs(old='OldWorker', flag='new_worker_name')
    """
    if not isinstance(old, str) or not old:
        raise ConfigurationError(f"enqueue_as: old name must be a non-empty string, got {old!r}")
    return EnqueueAs(old, check_name(flag))


def enqueue_as_of(job_class: type[Job]) -> EnqueueAs | None:
    """The class's producer switch (an :class:`EnqueueAs` or a ``{"old", "flag"}`` mapping),
    after checking that the old name is one of its aliases."""
    value = job_class.conveyor_options.get("enqueue_as")
    if value is None:
        return None
    if isinstance(value, Mapping) and set(value) == {"old", "flag"}:
        value = enqueue_as(str(value["old"]), flag=str(value["flag"]))
    if not isinstance(value, EnqueueAs):
        raise ConfigurationError(
            f"{job_class.__name__}: enqueue_as={value!r} is not valid; write "
            "enqueue_as=conveyor.features.transitions.enqueue_as('OldName', flag='flag_name')"
        )
    aliases = tuple(job_class.conveyor_options.get("aliases", ()))
    if value.old not in aliases:
        raise ConfigurationError(
            f"{job_class.__name__}: enqueue_as names {value.old!r}, which is not one of its "
            f"aliases {aliases!r}; add aliases=({value.old!r},) so jobs under the old name still "
            "run here"
        )
    return value


def is_deprecated(job_class: type[Job]) -> bool:
    return bool(job_class.conveyor_options.get("deprecated"))


class DeprecatedMiddleware(ServerMiddleware):
    """Skips ``perform`` of classes declared ``deprecated=True`` (the job counts as done),
    logging once per class and process. Installed after deduplication, so a deduplicated
    job's cookie is released as for any job."""

    options = frozenset({"deprecated"})

    def __init__(self) -> None:
        self._logged: set[str] = set()
        self._lock = threading.Lock()

    def applies_to(self, job_class: type[Job]) -> bool:
        return is_deprecated(job_class)

    def before_perform(self, ctx: JobContext) -> None:
        if not is_deprecated(ctx.job_class):
            return
        name = ctx.job_class.wire_name()
        with self._lock:
            first = name not in self._logged
            self._logged.add(name)
        if first:
            # Class name only: arguments may hold personal data.
            log.info(
                "job class %s is deprecated: its jobs finish without running perform; stop "
                "enqueueing it, then remove its jobs (conveyor compat remove-jobs)",
                name,
            )
        ctx.skip("deprecated")


class EnqueueAsMiddleware(ClientMiddleware):
    """Rewrites the ``class`` of a renamed job to its old name while the flag is off. A job
    enqueued explicitly under another name (``app.enqueue("OldWorker")``) keeps it."""

    options = frozenset({"enqueue_as"})

    def applies_to(self, job_class: type[Job] | None) -> bool:
        return job_class is not None and enqueue_as_of(job_class) is not None

    def before_enqueue(self, ctx: EnqueueContext) -> None:
        job_class = ctx.job_class
        if job_class is None:
            return
        switch = enqueue_as_of(job_class)
        if switch is None or ctx.job.get("class") != job_class.wire_name():
            return
        if not Flags.of(ctx.app).enabled(switch.flag):
            ctx.job["class"] = switch.old


def install(app: App) -> None:
    """Add the ``deprecated`` and ``enqueue_as`` options to ``app`` (``conveyor.App`` does)."""
    app.client_middleware.add(EnqueueAsMiddleware())
    app.server_middleware.add(DeprecatedMiddleware())

"""Orphan recovery (SPEC CORE-3): put the jobs of dead processes back on their queues.

A process is dead when its liveness key expired. Its working list is read, each job gets
``interrupted_count + 1``, and one Lua script moves them back (or parks jobs past
``max_retries_after_interruption`` in the ``interrupted`` set) after re-checking the owner is
still dead. Jobs already moved by a competing sweep are skipped, so nothing is duplicated.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from conveyor.core._protocols import AppLike
from conveyor.core.payload import Payload, dumps, parse, queue_of
from conveyor.errors import PayloadError
from conveyor.redis import Recovery

log = logging.getLogger("conveyor.recovery")


@dataclass
class SweepReport:
    requeued: int = 0
    parked: int = 0
    processes: list[str] = field(default_factory=list)


def interruption_limit(app: AppLike, job: Payload) -> int:
    """Per-class ``max_retries_after_interruption``, else the global setting (-1: no limit)."""
    job_class = app.registry.get(str(job.get("class")))
    if job_class is not None:
        limit = job_class.conveyor_options.get("max_retries_after_interruption")
        if isinstance(limit, int):
            return limit
    return app.settings.max_retries_after_interruption


def prepare(app: AppLike, raw: str) -> tuple[Recovery, Payload | None]:
    """Where one orphaned job goes, and its payload when it is parked."""
    try:
        job = parse(raw)
    except PayloadError:
        return Recovery(raw, None, raw), None  # not a job: park it as found, for a human
    count = job.get("interrupted_count")
    job["interrupted_count"] = (count if isinstance(count, int) else 0) + 1
    limit = interruption_limit(app, job)
    if 0 <= limit < job["interrupted_count"]:
        return Recovery(raw, None, dumps(job)), job
    return Recovery(raw, queue_of(job), dumps(job)), None


def sweep(app: AppLike, own_identity: str | None = None) -> SweepReport:
    """Recover every dead process's working list once."""
    store = app.store
    settings = app.settings
    report = SweepReport()
    for identity in store.registered_identities():
        if identity == own_identity or store.is_alive(identity):
            continue
        prepared = [prepare(app, raw) for raw in store.working_jobs(identity)]
        now = app.clock.time()
        result = store.recover(
            identity,
            [recovery for recovery, _ in prepared],
            now,
            settings.interrupted_max_jobs,
            now - settings.interrupted_timeout,
        )
        if result is None:
            continue
        moved, parked = result
        report.requeued += moved
        report.parked += parked
        if moved or parked:
            report.processes.append(identity)
            log.warning(
                "recovered %d job(s) of dead process %s; %d parked as interrupted",
                moved,
                identity,
                parked,
            )
        for _, job in prepared:
            if job is not None:
                for handler in app.interrupted_handlers:
                    try:
                        handler(job)
                    except Exception:
                        log.exception("interrupted handler %r failed", handler)
    return report

"""Orphan recovery (SPEC CORE-3): put the jobs of dead processes back on their queues.

A process is dead when its liveness key expired. Its working list and start boundary are read;
each job the process had started gets ``interrupted_count + 1`` (jobs it had only prefetched go
back unchanged, see docs/reliability.md), and one Lua script moves them back (or parks jobs past
``max_retries_after_interruption`` in the ``interrupted`` set) after re-checking the owner is
still dead. Jobs already moved by a competing sweep are skipped, so nothing is duplicated.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from conveyor.core._protocols import AppLike
from conveyor.core.payload import Payload, dumps, parse, quarantine, queue_of
from conveyor.core.units import STARTED_UP_TO
from conveyor.errors import PayloadError
from conveyor.redis import Recovery, Store, Trimmed

log = logging.getLogger("conveyor.recovery")


@dataclass
class SweepReport:
    requeued: int = 0
    parked: int = 0
    #: Jobs that went back without an interruption counted: the owner had not started them.
    unstarted: int = 0
    processes: list[str] = field(default_factory=list)


def interruption_limit(app: AppLike, job: Payload) -> int:
    """Per-class ``max_retries_after_interruption``, else the global setting (-1: no limit)."""
    job_class = app.registry.get(str(job.get("class")))
    if job_class is not None:
        limit = job_class.conveyor_options.get("max_retries_after_interruption")
        if isinstance(limit, int):
            return limit
    return app.settings.max_retries_after_interruption


def prepare(
    app: AppLike, raw: str, *, started: bool = True, now: float = 0.0
) -> tuple[Recovery, Payload | None]:
    """Where one orphaned job goes, and its payload when it is parked. Only a job the dead
    process had ``started`` counts an interruption."""
    try:
        job = parse(raw)
    except PayloadError as exc:  # not a job: to the dead set, raw text or bytes kept
        return Recovery(raw, None, quarantine(raw, "default", str(exc), now), dead=True), None
    if not started:
        return Recovery(raw, queue_of(job), raw), None
    count = job.get("interrupted_count")
    job["interrupted_count"] = (count if isinstance(count, int) else 0) + 1
    limit = interruption_limit(app, job)
    if 0 <= limit < job["interrupted_count"]:
        return Recovery(raw, None, dumps(job)), job
    return Recovery(raw, queue_of(job), dumps(job)), None


def started_flags(jobs: list[str], boundary: str | None) -> list[bool]:
    """For a working list read newest first, whether each job may have started: every job
    older than the boundary (the oldest job its process had not started), or, for a boundary
    marked :data:`~conveyor.core.units.STARTED_UP_TO`, that job and every older one. No
    boundary, or one no longer in the list: every job counts as started (the safe side for a
    poison job).

    >>> started_flags(["c", "b", "a"], "b"), started_flags(["c", "b", "a"], ">b")
    ([False, False, True], [False, True, True])
    """
    if not boundary:
        return [True] * len(jobs)
    up_to = boundary.startswith(STARTED_UP_TO)
    try:  # the newest copy if the same payload is there twice
        cut = jobs.index(boundary[len(STARTED_UP_TO) :] if up_to else boundary)
    except ValueError:
        return [True] * len(jobs)
    return [i > cut or (up_to and i == cut) for i in range(len(jobs))]


def log_trimmed(trimmed: Trimmed | None) -> None:
    """One log line for entries a capped set dropped (the counter is in Redis)."""
    if trimmed is not None:
        log.warning(
            "the %s set is full: %d oldest entr%s dropped (jids %s)",
            trimmed.zset,
            trimmed.count,
            "y" if trimmed.count == 1 else "ies",
            ", ".join(trimmed.jids),
        )


def sweep(app: AppLike, own_identity: str | None = None, store: Store | None = None) -> SweepReport:
    """Recover every dead process's working list once."""
    store = store or app.store
    report = SweepReport()
    for identity in store.registered_identities():
        if identity == own_identity or store.is_alive(identity):
            continue
        _recover_one(app, store, identity, report)
    return report


def _recover_one(app: AppLike, store: Store, identity: str, report: SweepReport) -> None:
    settings = app.settings
    jobs, boundary = store.working_state(identity)
    now = app.clock.time()
    flags = started_flags(jobs, boundary)
    prepared = [prepare(app, raw, started=f, now=now) for raw, f in zip(jobs, flags, strict=True)]
    result = store.recover(
        identity,
        [recovery for recovery, _ in prepared],
        now,
        settings.interrupted_max_jobs,
        now - settings.interrupted_timeout,
    )
    if result is None:
        return
    moved, parked, trimmed = result
    log_trimmed(trimmed)
    unstarted = flags.count(False)
    report.requeued += moved
    report.parked += parked
    report.unstarted += unstarted
    if moved or parked:
        report.processes.append(identity)
        log.warning(
            "recovered %d job(s) of dead process %s (%d it had not started); %d parked as "
            "interrupted",
            moved,
            identity,
            unstarted,
            parked,
        )
    for _, job in prepared:
        if job is not None:
            for handler in app.interrupted_handlers:
                try:
                    handler(job)
                except Exception:
                    log.exception("interrupted handler %r failed", handler)

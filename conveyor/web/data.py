"""What the pages show and the JSON API returns, built from the data API and the features'
read APIs only. Every function returns plain JSON-ready values; pages render the same ones.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from conveyor.api import (
    Api,
    FailedItemRecord,
    FinishedOperationRecord,
    JobRecord,
    JobSet,
    KillableSet,
    OperationRecord,
)
from conveyor.errors import ConfigurationError, NotFoundError, OperationError
from conveyor.features.cron import Cron
from conveyor.features.flags import Flags
from conveyor.features.operations import OperationsSettings, entity_link
from conveyor.features.operations.service import BULK_OPERATIONS

#: URL name -> (data API attribute, title, whether entries can be killed).
SETS: dict[str, tuple[str, str]] = {
    "retries": ("retries", "Retries"),
    "scheduled": ("scheduled", "Scheduled"),
    "dead": ("dead", "Dead"),
    "interrupted": ("interrupted", "Interrupted"),
}
PER_PAGE = 25
MAX_PER_PAGE = 500


def job_set(api: Api, kind: str) -> JobSet:
    """The sorted set a URL names; :class:`NotFoundError` for an unknown one."""
    if kind not in SETS:
        raise NotFoundError(f"no job set {kind!r}; use one of {', '.join(SETS)}")
    found = getattr(api, SETS[kind][0])
    assert isinstance(found, JobSet)
    return found


def killable(api: Api, kind: str) -> bool:
    return isinstance(job_set(api, kind), KillableSet)


@dataclass(frozen=True)
class Paging:
    """A 1-based page of ``per_page`` items out of ``total``."""

    page: int
    per_page: int
    total: int

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.per_page

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))

    def to_dict(self) -> dict[str, int]:
        return {"page": self.page, "per_page": self.per_page, "total": self.total}


def paging(page: Any, per_page: Any, total: int) -> Paging:
    """Validated paging from query parameters (bad values fall back to the defaults)."""
    try:
        size = min(MAX_PER_PAGE, max(1, int(per_page)))
    except (TypeError, ValueError):
        size = PER_PAGE
    try:
        number = max(1, int(page))
    except (TypeError, ValueError):
        number = 1
    return Paging(number, size, total)


def job(record: JobRecord, now: float) -> dict[str, Any]:
    """One job for display: the summary fields, its latency, the payload."""
    return {**record.to_dict(), "latency": record.latency(now)}


def stats(api: Api, *, every_store: bool = False) -> dict[str, Any]:
    """The overview's counters (``/api/stats``); with ``every_store`` and several stores,
    summed across them, each store's own under ``stores``."""
    if every_store and len(api.store_names()) > 1:
        overview = api.overview()
        return {
            **dataclasses.asdict(overview.total),
            "now": api.now(),
            "stores": [dataclasses.asdict(part) for part in overview.stores],
        }
    snapshot = api.stats()
    return {**dataclasses.asdict(snapshot), "now": api.now()}


def history(api: Api, days: int, *, every_store: bool = False) -> dict[str, Any]:
    """Daily processed and failed counts, oldest day first (``/api/history``); summed across
    the stores with ``every_store``."""
    found = api.history_all(days) if every_store else api.history(days)
    dates = sorted(found.processed)
    return {
        "days": dates,
        "processed": [found.processed[d] for d in dates],
        "failed": [found.failed[d] for d in dates],
    }


def queues(api: Api) -> list[dict[str, Any]]:
    """Every queue with its size and latency (``/api/queues``)."""
    return [{"name": q.name, "size": q.size(), "latency": q.latency()} for q in api.queues()]


def queue_jobs(api: Api, name: str, page: Any = 1, per_page: Any = PER_PAGE) -> dict[str, Any]:
    """One page of a queue's jobs, newest first."""
    queue = api.queue(name)
    pager = paging(page, per_page, queue.size())
    now = api.now()
    return {
        "name": name,
        "latency": queue.latency(),
        **pager.to_dict(),
        "jobs": [job(r, now) for r in queue.jobs(pager.offset, pager.per_page)],
    }


def set_jobs(api: Api, kind: str, page: Any = 1, per_page: Any = PER_PAGE) -> dict[str, Any]:
    """One page of a sorted set (scheduled, retries, dead, interrupted) in listing order."""
    entries = job_set(api, kind)
    pager = paging(page, per_page, entries.size())
    now = api.now()
    return {
        "set": kind,
        "killable": killable(api, kind),
        **pager.to_dict(),
        "jobs": [job(r, now) for r in entries.jobs(pager.offset, pager.per_page)],
    }


def set_job(api: Api, kind: str, jid: str) -> dict[str, Any]:
    """One entry of a sorted set with its backtrace; :class:`NotFoundError` if absent."""
    record = job_set(api, kind).get(jid)
    return {**job(record, api.now()), "backtrace": record.error_backtrace()}


def processes(api: Api) -> list[dict[str, Any]]:
    """Live processes (``/api/processes``) with their loops' health; the raw ``info`` hash
    is left out."""
    out = []
    for process in api.processes.list():
        item = dataclasses.asdict(process)
        item.pop("info", None)
        item["healthy"] = process.healthy
        item["failing_loops"] = process.failing_loops
        out.append(item)
    return out


def busy(api: Api) -> list[dict[str, Any]]:
    """What every process and thread runs now, longest running first (``/api/busy``)."""
    now = api.now()
    return [
        {
            "identity": w.identity,
            "thread": w.thread_id,
            "queue": w.queue,
            "run_at": w.run_at,
            "job": job(w.job, now),
        }
        for w in api.work.list()
    ]


def cron(api: Api) -> list[dict[str, Any]]:
    """Cron entries with their last and next tick (``/api/cron``)."""
    runner = Cron(api.app, api.store_name)
    now = api.now()
    out = []
    for entry in runner.entries():
        try:
            upcoming: float | None = entry.next_tick(now) if entry.enabled else None
        except (ValueError, KeyError):
            upcoming = None
        out.append(
            {
                **dataclasses.asdict(entry),
                "last_tick": runner.last_tick(entry.name),
                "next_tick": upcoming,
            }
        )
    return out


def flags(api: Api) -> list[dict[str, Any]]:
    """Feature flags with their state (``/api/flags``)."""
    return [
        {**dataclasses.asdict(state), "summary": state.summary}
        for state in Flags(api.app, cache_ttl=0).all()
    ]


def operations(api: Api) -> list[dict[str, Any]]:
    """Running bulk operations with their progress, oldest first (``/api/operations``)."""
    return [operation_summary(r) for r in api.operations.list()]


def operation_summary(record: OperationRecord | FinishedOperationRecord) -> dict[str, Any]:
    """Type, status, counts and timestamps of one operation. The user id and the parameters
    are left out on purpose: the dashboard shows no personal data (SPEC OPS-5)."""
    finished_at = record.finished_at if isinstance(record, FinishedOperationRecord) else None
    expires_in = record.expires_in if isinstance(record, OperationRecord) else None
    return {
        "id": record.id,
        "operation_type": record.operation_type,
        "status": record.status,
        "finished": record.finished,
        "total_items": record.total_items,
        "successful_items": record.successful_items,
        "failed_items": record.failed_items,
        "processed_items": record.processed_items,
        "percent": round(record.percent, 1),
        "created_at": record.created_at,
        "completed_at": record.completed_at,
        "finished_at": finished_at,
        "expires_in": expires_in,
        # Why the failure e-mail was not delivered (status notify_failed): never an address.
        "notify_error": record.notify_error if isinstance(record, OperationRecord) else "",
    }


def operation(
    api: Api, operation_id: str, page: Any = 1, per_page: Any = PER_PAGE
) -> dict[str, Any]:
    """One operation (a unique id prefix is enough) with a page of its failed items, oldest
    first, each with the link the failure e-mail gives it (``/api/operations/{id}``).

    A finished operation has only its final totals: its failed items were deleted with it
    after the e-mail went out.
    """
    ops = api.operations
    try:
        full_id = ops.resolve(operation_id)
    except OperationError:
        raise NotFoundError(f"no bulk operation {operation_id!r}: not a valid id") from None
    record = ops.status(full_id)
    if record is None:
        raise NotFoundError(f"bulk operation {operation_id!r} finished and its totals expired")
    pager = paging(page, per_page, 0 if record.finished else record.failed_items)
    items = ops.failed_items(full_id, pager.offset, pager.per_page) if pager.total else []
    base_url = operations_base_url(api)
    return {
        **operation_summary(record),
        **pager.to_dict(),
        "items": [failed_item(i, base_url) for i in items],
    }


def failed_item(item: FailedItemRecord, base_url: str) -> dict[str, Any]:
    """A failed item for display, with ``link`` built as the failure e-mail builds it."""
    link = entity_link(base_url, item.entity_full_path) if item.entity_full_path else None
    return {**dataclasses.asdict(item), "link": link}


def operations_base_url(api: Api) -> str:
    """The ``base_url`` entity links start with: the app's :class:`BulkOperations` settings
    when it declares them, else ``CONVEYOR_OPERATIONS_BASE_URL`` (read now, not at import)."""
    declared = api.app.extensions.get(BULK_OPERATIONS)
    if declared is not None:
        return declared.settings.base_url
    try:
        return OperationsSettings.from_env().base_url
    except ConfigurationError:  # e.g. an SMTP setting the web process has no use for
        return OperationsSettings().base_url

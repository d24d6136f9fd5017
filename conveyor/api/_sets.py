"""Queues and the sorted sets of jobs (scheduled, retry, dead, interrupted)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import ClassVar

from conveyor.api._records import JobRecord
from conveyor.api._source import Source
from conveyor.core.payload import Payload, dumps
from conveyor.errors import NotFoundError, PayloadError
from conveyor.redis.admin import ZSetName

#: Called as ``progress(done, total)`` while a bulk operation runs.
Progress = Callable[[int, int], None]

#: Entries read per round trip when iterating or moving in bulk.
PAGE = 100


def _paged(jobs: Callable[[int, int], list[JobRecord]]) -> Iterator[JobRecord]:
    """Every record ``jobs(offset, limit)`` can list, read a page at a time."""
    offset = 0
    while page := jobs(offset, PAGE):
        yield from page
        offset += len(page)


class Queue:
    """One queue (``queue:<name>``): index 0 is the newest job, the right end runs next.

    >>> q = api.queue("default")                               # doctest: +SKIP
    >>> q.size(), q.latency()                                  # doctest: +SKIP
    (3, 1.5)
    """

    def __init__(self, api: Source, name: str) -> None:
        self.api = api
        self.name = name

    def __repr__(self) -> str:
        return f"Queue({self.name!r})"

    def size(self) -> int:
        """Jobs waiting. Example: ``api.queue("mail").size()``."""
        return self.api.admin.queue_sizes([self.name])[0]

    def latency(self) -> float:
        """Seconds the job that runs next has waited (0 for an empty queue).

        Example: ``api.queue("default").latency() > 60`` means a backlog.
        """
        raw = self.api.admin.queue_oldest(self.name)
        if raw is None:
            return 0.0
        return JobRecord.from_raw(raw, self.name).latency(self.api.now())

    def jobs(self, offset: int = 0, limit: int = 50) -> list[JobRecord]:
        """One page of jobs, newest first. Example: ``api.queue("default").jobs(0, 25)``."""
        if limit <= 0:
            return []
        rows = self.api.admin.queue_range(self.name, offset, offset + limit - 1)
        return [JobRecord.from_raw(raw, self.name) for raw in rows]

    def __iter__(self) -> Iterator[JobRecord]:
        """Every job, newest first, read a page at a time."""
        return _paged(self.jobs)

    def find_job(self, jid: str) -> JobRecord | None:
        """The job with ``jid``, or ``None``. Example: ``api.queue("default").find_job(jid)``."""
        return next((job for job in self if jid in job.raw and job.jid == jid), None)

    def delete_job(self, jid: str) -> bool:
        """Remove the job with ``jid``; False if it is not (or no longer) there."""
        job = self.find_job(jid)
        return job is not None and self.api.admin.queue_remove(self.name, job.raw)

    def clear(self) -> int:
        """Delete every job and the queue's name; returns how many jobs it held.

        Example: ``api.queue("obsolete").clear()``.
        """
        return self.api.admin.queue_clear(self.name)


class JobSet:
    """A sorted set of jobs (scheduled, retry, dead, interrupted), scored by epoch seconds.

    >>> api.retries.size()                                     # doctest: +SKIP
    2
    """

    name: ClassVar[ZSetName]
    #: Human name used in messages.
    label: ClassVar[str]
    #: Default listing order: dead and interrupted show the newest first.
    newest_first: ClassVar[bool] = False

    def __init__(self, api: Source) -> None:
        self.api = api

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def size(self) -> int:
        """Entries in the set. Example: ``api.dead.size()``."""
        return self.api.admin.zset_size(self.name)

    def jobs(self, offset: int = 0, limit: int = 50) -> list[JobRecord]:
        """One page in listing order. Example: ``api.retries.jobs(0, 25)``."""
        if limit <= 0:
            return []
        rows = self.api.admin.zset_range(
            self.name, offset, offset + limit - 1, reverse=self.newest_first
        )
        return [JobRecord.from_raw(raw, score=score) for raw, score in rows]

    def __iter__(self) -> Iterator[JobRecord]:
        """Every entry in listing order, a page at a time."""
        return _paged(self.jobs)

    def find_job(self, jid: str) -> JobRecord | None:
        """The entry with ``jid`` (found with ZSCAN), or ``None``.

        Example: ``api.retries.find_job("2f6c...")``.
        """
        for raw, score in self.api.admin.zset_scan(self.name, jid):
            record = JobRecord.from_raw(raw, score=score)
            if record.jid == jid:
                return record
        return None

    def get(self, jid: str) -> JobRecord:
        """Like :meth:`find_job`, but raises :class:`NotFoundError` naming the jid."""
        record = self.find_job(jid)
        if record is None:
            raise NotFoundError(f"no job with jid {jid!r} in the {self.label} set")
        return record

    def delete_job(self, jid: str) -> bool:
        """Remove the entry with ``jid``; False if it is not there.

        Example: ``api.dead.delete_job(jid)``.
        """
        record = self.find_job(jid)
        return record is not None and self.api.admin.zset_remove(self.name, record.raw)

    def clear(self) -> int:
        """Delete every entry; returns how many there were. Example: ``api.dead.clear()``."""
        return self.api.admin.zset_clear(self.name)

    def retry(self, jid: str) -> JobRecord:
        """Move the entry with ``jid`` onto its queue now (atomically); returns it as pushed.

        Example: ``api.retries.retry(jid).queue``.
        """
        record = self.get(jid)
        if not record.valid:
            raise PayloadError(
                f"the {self.label} entry {record.raw[:60]!r} is not a valid job and cannot be "
                "retried; delete it instead"
            )
        payload = self._requeued(record, self.api.now())
        text = dumps(payload)
        if not self.api.admin.zset_to_queue(self.name, record.raw, text, record.queue):
            raise NotFoundError(f"job {jid!r} left the {self.label} set before it could be moved")
        return JobRecord.from_raw(text, record.queue)

    def retry_all(self, progress: Progress | None = None, batch: int = PAGE) -> int:
        """Move every valid entry onto its queue, ``batch`` per script call; returns how many
        moved. Entries that are not valid jobs stay. Example: ``api.dead.retry_all()``.
        """
        total = self.size()
        done = moved = skipped = 0
        while done < total:
            rows = self.api.admin.zset_range(self.name, skipped, skipped + batch - 1)
            if not rows:
                break
            now = self.api.now()
            moves: list[tuple[str, str, str]] = []
            for raw, score in rows:
                record = JobRecord.from_raw(raw, score=score)
                if record.valid:
                    moves.append((raw, record.queue, dumps(self._requeued(record, now))))
                else:
                    skipped += 1
            moved += self.api.admin.zset_to_queues(self.name, moves)
            done += len(rows)
            if progress is not None:
                progress(min(done, total), total)
        return moved

    def _requeued(self, record: JobRecord, now: float) -> Payload:
        """The payload to push when the entry goes back to its queue."""
        payload = dict(record.payload)
        payload.pop("at", None)
        payload["queue"] = record.queue
        payload["enqueued_at"] = now
        return payload


class KillableSet(JobSet):
    """A job set whose entries can also be sent to the dead set."""

    def kill(self, jid: str) -> JobRecord:
        """Move the entry with ``jid`` to the dead set as it is (atomically, capped).

        Example: ``api.retries.kill(jid)``.
        """
        record = self.get(jid)
        if not self._kill(record, self.api.now()):
            raise NotFoundError(f"job {jid!r} left the {self.label} set before it could be moved")
        return record

    def kill_all(self, progress: Progress | None = None) -> int:
        """Move every entry to the dead set; returns how many moved.

        Example: ``api.retries.kill_all()``.
        """
        total = self.size()
        done = moved = 0
        while done < total:
            rows = self.api.admin.zset_range(self.name, 0, PAGE - 1)
            if not rows:
                break
            now = self.api.now()
            for raw, score in rows:
                moved += self._kill(JobRecord.from_raw(raw, score=score), now)
                done += 1
                if progress is not None:
                    progress(min(done, total), total)
        return moved

    def _kill(self, record: JobRecord, now: float) -> bool:
        settings = self.api.settings
        moved = self.api.admin.zset_kill(
            self.name,
            record.raw,
            record.raw,
            now=now,
            dead_max=settings.dead_max_jobs,
            dead_cutoff=now - settings.dead_timeout,
        )
        if moved and record.valid:
            self.api.notify_death(record.payload)
        return moved


class ScheduledSet(KillableSet):
    """Jobs waiting for their ``perform_in``/``perform_at`` time (``schedule``).

    ``retry`` enqueues a scheduled job now (Sidekiq's "add to queue").
    """

    name = "schedule"
    label = "scheduled"


def _give_back_attempt(payload: Payload, record: JobRecord) -> Payload:
    # As Sidekiq: keep the failure fields, and give back the attempt the next failure counts,
    # so a retried dead job gets one more try.
    if record.retry_count is not None:
        payload["retry_count"] = record.retry_count - 1
    return payload


class RetrySet(KillableSet):
    """Failed jobs waiting for their next attempt (``retry``), soonest first."""

    name = "retry"
    label = "retry"

    def _requeued(self, record: JobRecord, now: float) -> Payload:
        return _give_back_attempt(super()._requeued(record, now), record)


class DeadSet(JobSet):
    """Jobs that exhausted their retries (``dead``), newest first; capped by the settings."""

    name = "dead"
    label = "dead"
    newest_first = True

    def _requeued(self, record: JobRecord, now: float) -> Payload:
        return _give_back_attempt(super()._requeued(record, now), record)


class InterruptedSet(KillableSet):
    """Jobs parked after too many crash recoveries (``interrupted``), newest first.

    Retrying one resets its ``interrupted_count``, so it gets the full budget again.
    """

    name = "interrupted"
    label = "interrupted"
    newest_first = True

    def _requeued(self, record: JobRecord, now: float) -> Payload:
        payload = super()._requeued(record, now)
        payload.pop("interrupted_count", None)
        return payload

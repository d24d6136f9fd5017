"""What an importer is made of: :class:`Importer` (the stages and how to import one record)
and :class:`StageRun` (what a stage or record job knows about its import and can do to it).
See :mod:`conveyor.features.imports.pipeline` for how the stages run."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import redis

from conveyor.core._protocols import AppLike
from conveyor.errors import RecordError
from conveyor.features.imports.cache import ImportCache
from conveyor.features.imports.flag import BulkHooks
from conveyor.features.imports.model import HealthSignal, ImportState, RecordRef
from conveyor.logs import import_logger, log_record
from conveyor.redis.import_store import ImportStore

#: Errors that say nothing about the record: running it again can succeed.
_TRANSIENT = (
    ConnectionError,
    TimeoutError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)


class Importer:
    """Base of importers. Subclasses set ``name`` (the importer type every log line and
    status names) and ``stages``; stages in ``record_stages`` fan out into record jobs.

    - :meth:`run_stage` does the work of the other stages.
    - :meth:`records` lists a record stage's records, from ``run.cursor()`` on, each with the
      cursor that follows it.
    - :meth:`import_record` saves one record; it must be idempotent (keyed by source ids)
      and, in ``missing`` mode, must not change rows that exist.
    """

    name: ClassVar[str] = ""
    stages: ClassVar[tuple[str, ...]] = ()
    record_stages: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, *, health_signal: HealthSignal | None = None) -> None:
        self.health_signal = health_signal
        self.bulk_hooks = BulkHooks()

    def precheck(self, options: Mapping[str, Any]) -> None:
        """Refuse ``options`` before an import record is created (an upload that fails
        validation, say); called by :meth:`Imports.retry_missing`. Default: accept.

        >>> Importer().precheck({"source": "export.tar.gz"})
        """

    def run_stage(self, run: StageRun) -> None:
        """Do the work of a stage without record jobs."""
        raise NotImplementedError(f"{type(self).__name__} has no work for stage {run.stage!r}")

    def records(self, run: StageRun) -> Iterator[tuple[RecordRef, str]]:
        """The records of a record stage from ``run.cursor()`` on, each with the cursor to
        save after it."""
        raise NotImplementedError(f"{type(self).__name__} lists no records for {run.stage!r}")

    def import_record(self, run: StageRun, ref: RecordRef) -> None:
        """Save one record (idempotently)."""
        raise NotImplementedError(f"{type(self).__name__} cannot import {run.stage!r} records")

    def retryable(self, exc: BaseException) -> bool:
        """Whether running the record again could succeed. Default: a :class:`RecordError`
        says so itself; connection and time-out errors (Redis's too: the cache) are retryable;
        anything else (bad data) is not."""
        if isinstance(exc, RecordError):
            return exc.retryable
        return isinstance(exc, _TRANSIENT)

    def record_type(self, stage: str) -> str:
        """The record type log lines name for ``stage`` (default: the stage's name)."""
        return stage

    def checkpoint(self, run: StageRun, step: str) -> None:
        """Called at safe points (after each scheduled chunk, and wherever the importer calls
        it). No-op; crash tests override it to stop a worker at a known place."""

    def finished(self, state: ImportState) -> None:
        """Called once when the import finished (after its last stage)."""

    def failed(self, state: ImportState) -> None:
        """Called once when the import was failed (a stage out of retries, a refused upload,
        the stuck detector), in the process that failed it."""


class Pipeline(Protocol):
    """What a :class:`StageRun` needs of its pipeline
    (:class:`~conveyor.features.imports.pipeline.Imports`)."""

    cache_ttl: float

    @property
    def app(self) -> AppLike: ...

    @property
    def store(self) -> ImportStore: ...

    def now(self) -> float: ...

    def fail(self, import_id: str, message: str, *, reason: str | None = None) -> bool: ...

    def _record_failure(
        self, run: StageRun, record_id: str, exc: BaseException, *, retryable: bool
    ) -> None: ...

    def _done(self, run: StageRun, token: str, *, failed: bool = False) -> None: ...


@dataclass
class StageRun:
    """What a stage or record job knows about its import, and what it can do to it."""

    imports: Pipeline

    state: ImportState
    stage: str
    importer: Importer

    @property
    def import_id(self) -> str:
        """The import's id."""
        return self.state.id

    @property
    def options(self) -> dict[str, Any]:
        """The options the import was started with (JSON values)."""
        return self.state.options

    @property
    def mode(self) -> str:
        """``import``, or ``missing`` for a partial retry (insert what is absent, change
        nothing that exists)."""
        return self.state.mode

    @property
    def cache(self) -> ImportCache:
        """A cache shared by the jobs of this import (24 h default TTL)."""
        return ImportCache(self.imports.app, self.import_id, self.imports.cache_ttl)

    def cursor(self, name: str = "") -> str | None:
        """The progress pointer ``name`` of this stage (``None``: start from the beginning)."""
        return self.imports.store.cursor(self.import_id, f"{self.stage}:{name}")

    def save_cursor(self, value: str, name: str = "") -> None:
        """Save a progress pointer; a job that runs again resumes from it."""
        now = self.imports.app.clock.time()
        self.imports.store.save_cursor(self.import_id, f"{self.stage}:{name}", value, now=now)

    def refresh(self) -> None:
        """Tell the stuck detector this import is alive (call it in long loops)."""
        self.imports.store.touch(self.import_id, now=self.imports.app.clock.time())

    @contextmanager
    def keep_alive(self, every: float = 60.0) -> Iterator[None]:
        """Refresh the import's liveness every ``every`` seconds while the block runs, for one
        long call that cannot call :meth:`refresh` itself (extracting a large archive...).

        >>> with run.keep_alive():                     # doctest: +SKIP
        ...     extract(upload, root)
        """
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(every):
                try:
                    self.refresh()
                except Exception:  # a missed beat only matters if all of them are missed
                    continue

        thread = threading.Thread(target=beat, name="import-keep-alive", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(5)

    def fail_record(self, record_id: str, exc: BaseException, *, retryable: bool = False) -> None:
        """Record a failure for a record that never got a job of its own (a line that is not
        JSON, a bad label in a bulk batch); counted once however often the stage runs."""
        imports = self.imports
        if imports.store.pending(self.import_id, self.stage, [record_id], now=imports.now()):
            imports._record_failure(self, record_id, exc, retryable=retryable)
            imports._done(self, record_id, failed=True)

    def record_bulk(self, record_ids: Sequence[str]) -> int:
        """Count records this stage saved in bulk (no record job each): each counted once in
        the stage's totals (``status`` shows them), with its per-record log line, as a record
        job would have. Returns how many were new.

        >>> run.record_bulk([str(row["export_id"]) for row in rows])   # doctest: +SKIP
        """
        imports = self.imports
        now = imports.now()
        ids = list(dict.fromkeys(record_ids))
        wanted = imports.store.pending(self.import_id, self.stage, ids, now=now)
        fresh = [rid for rid, ok in zip(ids, wanted, strict=False) if ok]
        counted = imports.store.done_bulk(self.import_id, self.stage, fresh, now=now)
        for rid in fresh:
            log_record(self.log, self.record_type, rid, "imported")
        return counted

    @property
    def log(self) -> Any:
        """A structured logger bound to the importer type, the import id and the stage; every
        line must add a ``status`` (SPEC IMP-2). Never pass record contents to it."""
        return import_logger(self.importer.name, self.import_id, stage=self.stage)

    @property
    def record_type(self) -> str:
        """What a record of this stage is called in log lines (the importer may override)."""
        return self.importer.record_type(self.stage)

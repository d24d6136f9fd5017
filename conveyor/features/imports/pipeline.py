"""Multi-stage imports made of Conveyor jobs (SPEC IMP-3 … IMP-9).

An :class:`Importer` names its stages. Each stage runs as one *stage job*; a *record stage*
also fans out into one *record job* per record. A stage advances when all its jobs finished,
and no worker thread waits for that: every record token sits in the stage's pending set in
Redis, each job removes its own token when it ends (``imp_done.lua``) and the call that
empties the set pushes the next stage's job in the same step. The stage job holds a token of
its own until it has enqueued every record, so a stage never advances half-scheduled.

- Stage jobs retry 6 times (about 20 minutes of backoff) and may be interrupted many times:
  they resume from their progress pointers (:meth:`StageRun.cursor`).
- Record jobs are spread (:func:`conveyor.features.concurrency.spread`) and capped by a cluster-wide
  concurrency limit; jobs over it are deferred in Redis and re-enqueued as slots free.
- One bad record never fails an import: its error is recorded (record id, stage, error class,
  message, retryable?) and the stage goes on. Retryable errors are retried first.
- Jobs run with the ``importing`` flag set (:mod:`conveyor.features.imports.flag`).
- With a health signal, write-heavy record jobs re-enqueue themselves with a delay while the
  database reports saturation.
- A cron entry fails imports whose progress has not moved for ``stuck_after`` seconds.

>>> imports = Imports(app, ImportSettings())                 # doctest: +SKIP
>>> imports.register(ProjectImporter())                      # doctest: +SKIP
>>> import_id = imports.start("project_export", {"source": "export.tar.gz"})  # doctest: +SKIP
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from conveyor.core.extensions import ExtensionKey
from conveyor.core.payload import dumps
from conveyor.core.retry import error_class_name
from conveyor.errors import ConfigurationError, ImportPipelineError, NotFoundError
from conveyor.features import cron
from conveyor.features.concurrency import spread
from conveyor.features.imports import stage_jobs as jobs
from conveyor.features.imports.base import Importer, StageRun
from conveyor.features.imports.cache import DEFAULT_TTL
from conveyor.features.imports.flag import importing
from conveyor.features.imports.model import (
    Failure,
    ImportSettings,
    ImportState,
    RecordRef,
    error_message,
)
from conveyor.logs import import_logger, log_record
from conveyor.redis.import_store import STAGE_TOKEN, ImportStore, StagePush

if TYPE_CHECKING:
    from conveyor.core.app import App

__all__ = ["STUCK_CRON", "Importer", "Imports", "StageRun"]

STUCK_CRON = "conveyor-imports-stuck"
#: Stage jobs resume from their cursors, so being interrupted by a deploy costs little.
STAGE_INTERRUPTIONS = 20
MODES = ("import", "missing")


class Imports:
    """The import toolkit on one app: importers, the three jobs and the service calls.

    Creating it registers the jobs and the stuck-detector cron entry on ``app`` (which must
    have the standard features: ``conveyor.App``); worker processes create it too and
    register the same importers.
    """

    def __init__(
        self,
        app: App,
        settings: ImportSettings | None = None,
        *,
        cache_ttl: float = DEFAULT_TTL,
    ) -> None:
        if IMPORTS in app.extensions:
            raise ConfigurationError("this app already has Imports; use Imports.of(app)")
        self.app = app
        self.settings = settings or ImportSettings()
        self.cache_ttl = cache_ttl
        self.importers: dict[str, Importer] = {}
        s = self.settings
        self.stage_job = app.register(
            jobs.StageJob.bind(self),
            name=jobs.STAGE_JOB,
            queue=s.queue,
            retry=s.stage_retry,
            max_retries_after_interruption=STAGE_INTERRUPTIONS,
        )
        self.record_job = app.register(
            jobs.RecordJob.bind(self),
            name=jobs.RECORD_JOB,
            queue=s.queue,
            retry=s.record_retry,
            concurrency_limit=s.record_concurrency,
        )
        self.stuck_job = app.register(
            jobs.StuckJob.bind(self), name=jobs.STUCK_JOB, queue=s.queue, retry=0
        )
        cron.schedule(app, STUCK_CRON, s.stuck_schedule, self.stuck_job)
        app.extensions[IMPORTS] = self

    @classmethod
    def of(cls, app: App) -> Imports:
        """The app's instance, created with default settings if it has none yet."""
        return app.extensions.get(IMPORTS) or cls(app)

    @property
    def store(self) -> ImportStore:
        """The import keys on the app's Redis."""
        return ImportStore(self.app.store)

    def now(self) -> float:
        """Epoch seconds by the app's (injectable) clock."""
        return self.app.clock.time()

    def register(self, importer: Importer) -> Importer:
        """Make an importer known to this process (the service and every worker)."""
        name = importer.name
        if not name or not importer.stages:
            raise ConfigurationError(
                f"{type(importer).__name__} needs a name and stages, e.g. name = 'github' "
                "and stages = ('repository', 'issues', 'finish')"
            )
        unknown = importer.record_stages - set(importer.stages)
        if unknown:
            raise ConfigurationError(f"{name}: record stages {sorted(unknown)} are not stages")
        self.importers[name] = importer
        return importer

    def importer(self, name: str) -> Importer:
        """The registered importer called ``name``."""
        found = self.importers.get(name)
        if found is None:
            known = ", ".join(sorted(self.importers)) or "none"
            raise ConfigurationError(
                f"no importer {name!r} is registered in this process (known: {known}); "
                "register it with Imports.register() where the worker loads"
            )
        return found

    # -- the service ----------------------------------------------------------------------------
    def start(
        self,
        importer: str,
        options: Mapping[str, Any],
        *,
        mode: str = "import",
        parent: str = "",
        import_id: str | None = None,
    ) -> str:
        """Create an import and enqueue its first stage; returns the import id."""
        found = self.importer(importer)
        if mode not in MODES:
            raise ImportPipelineError(f"mode {mode!r} is not one of {', '.join(MODES)}")
        import_id = import_id or secrets.token_hex(12)
        first = self._push(import_id, found.stages[0])
        fields = {
            "id": import_id,
            "importer": importer,
            "mode": mode,
            "parent": parent,
            "stages": ",".join(found.stages),
            "options": _json(options),
        }
        now = self.app.clock.time()
        if not self.store.create(import_id, fields, first, now=now):
            raise ImportPipelineError(f"an import with id {import_id!r} exists already")
        import_logger(importer, import_id).info("import started", status="started", mode=mode)
        return import_id

    def retry_missing(self, import_id: str) -> str:
        """Partial retry (SPEC IMP-8): a new import of the same source in ``missing`` mode,
        which inserts the records that are absent and changes nothing that exists."""
        state = self.get(import_id)
        if state.active:
            raise ImportPipelineError(
                f"import {import_id} is still running; retry what is missing once it ended"
            )
        # The source may have changed since: check it again before a new record exists.
        self.importer(state.importer).precheck(state.options)
        return self.start(state.importer, state.options, mode="missing", parent=import_id)

    def get(self, import_id: str) -> ImportState:
        """The import as stored; :class:`NotFoundError` when it is gone or never was."""
        data = self.store.get(import_id)
        if data is None:
            raise NotFoundError(
                f"no import {import_id!r} (it expired, or the id is wrong); "
                "`conveyor import status` lists them"
            )
        return ImportState.from_hash(data, tuple(filter(None, data.get("stages", "").split(","))))

    def recent(self, count: int = 50) -> list[ImportState]:
        """The newest imports first."""
        out = []
        for import_id in self.store.ids(0, count):
            data = self.store.get(import_id)
            if data is not None:
                stages = tuple(filter(None, data.get("stages", "").split(",")))
                out.append(ImportState.from_hash(data, stages))
        return out

    def failures(self, import_id: str) -> list[Failure]:
        """Per-record failures, in stage order then record id."""
        found = [Failure.from_json(raw) for raw in self.store.failures(import_id).values()]
        return sorted(found, key=lambda f: (f.at, f.stage, f.record_id))

    def fail(self, import_id: str, message: str, *, reason: str | None = None) -> bool:
        """Fail a running import with ``message`` (shown by ``status``); ``reason`` is what
        the log line says (default: the message), for messages that may quote data."""
        now = self.app.clock.time()
        failed = bool(self.store.fail([import_id], message, now=now))
        if failed:
            data = self.store.get(import_id) or {}
            import_logger(data.get("importer", "unknown"), import_id).warning(
                "import failed", status="failed", reason=reason or message
            )
            self._failed_hook(import_id)
        return failed

    def _failed_hook(self, import_id: str) -> None:
        state = self.get(import_id)
        importer = self.importers.get(state.importer)
        if importer is not None:
            importer.failed(state)

    def fail_stuck(self) -> list[str]:
        """Fail running imports whose progress did not move for ``stuck_after`` seconds
        (SPEC IMP-7); an import that keeps moving, however slowly, is left alone."""
        now = self.app.clock.time()
        cutoff = now - self.settings.stuck_after
        message = f"no progress for {self.settings.stuck_after:g} s: failed as stuck"
        failed = self.store.fail(self.store.stalled(cutoff), message, now=now, cutoff=cutoff)
        for import_id in failed:
            data = self.store.get(import_id) or {}
            import_logger(data.get("importer", "unknown"), import_id).warning(
                "import stuck", status="failed", stuck_after=self.settings.stuck_after
            )
            self._failed_hook(import_id)
        return failed

    # -- stage jobs -----------------------------------------------------------------------------
    def run_stage(self, import_id: str, stage: str) -> None:
        """The body of a stage job: run the stage (or schedule its records), then give back
        the stage's own token, which advances the import once every record has ended."""
        run = self._run(import_id, stage)
        if run is None:
            return
        if any(s.name == stage and s.advanced_at for s in run.state.stages):
            run.log.info("stage already done", status="skipped")
            return
        self.store.touch(import_id, now=self.app.clock.time())
        run.log.info("stage started", status="running")
        with importing():
            if stage in run.importer.record_stages:
                self._schedule(run)
            else:
                run.importer.run_stage(run)
        self._done(run, STAGE_TOKEN)

    def _schedule(self, run: StageRun) -> None:
        """Register and enqueue the stage's records chunk by chunk, saving the cursor after
        each chunk, so a stage job that runs again continues where it stopped."""
        chunk: list[RecordRef] = []
        cursor = ""
        sent = 0
        for ref, after in run.importer.records(run):
            chunk.append(ref)
            cursor = after
            if len(chunk) >= self.settings.chunk_size:
                sent += self._enqueue(run, chunk, cursor, sent)
                chunk = []
        if chunk:
            self._enqueue(run, chunk, cursor, sent)

    def _enqueue(self, run: StageRun, refs: list[RecordRef], cursor: str, sent: int) -> int:
        store, s = self.store, self.settings
        wanted = store.pending(
            run.import_id, run.stage, [r.record_id for r in refs], now=self.app.clock.time()
        )
        args = [
            [run.import_id, run.stage, r.record_id, r.locator]
            for r, ok in zip(refs, wanted, strict=False)
            if ok
        ]
        if not wanted:
            return 0  # the import stopped running
        # Waves count across chunks: job number ``sent + i`` starts in wave
        # ``(sent + i) // spread_per_interval``, however the chunks fall.
        per = s.spread_per_interval
        position = 0
        while position < len(args):
            wave, offset = divmod(sent + position, per)
            group = args[position : position + per - offset]
            spread(
                self.record_job,
                group,
                per_interval=len(group),
                interval=s.spread_interval,
                start_in=wave * s.spread_interval,
            )
            position += len(group)
        run.save_cursor(cursor)
        run.log.info("records scheduled", status="running", count=len(args))
        run.importer.checkpoint(run, f"chunk:{sent + len(args)}")
        return len(args)

    # -- record jobs ----------------------------------------------------------------------------
    def run_record(self, import_id: str, stage: str, record_id: str, locator: str) -> None:
        """The body of a record job: import one record (or defer it while the health signal
        is raised), record its failure if it has bad data, and count it done."""
        run = self._run(import_id, stage)
        if run is None:
            return
        signal = run.importer.health_signal
        if signal is not None and signal.saturated():
            self.store.increment(import_id, "deferred")
            delay = self.settings.defer_delay
            self.record_job.perform_in(delay, import_id, stage, record_id, locator)
            log_record(run.log, run.record_type, record_id, "deferred", delay=delay)
            return
        try:
            with importing():
                run.importer.import_record(run, RecordRef(record_id, locator))
        except Exception as exc:
            if run.importer.retryable(exc):
                kind = error_class_name(exc)
                log_record(run.log, run.record_type, record_id, "retrying", error_class=kind)
                raise
            self._record_failure(run, record_id, exc, retryable=False)
            self._done(run, record_id, failed=True)
            return
        log_record(run.log, run.record_type, record_id, "imported")
        self._done(run, record_id)

    def give_up_record(
        self, import_id: str, stage: str, record_id: str, exc: BaseException
    ) -> None:
        """A retryable record ran out of retries: record it and let the stage go on."""
        run = self._run(import_id, stage)
        if run is None:
            return
        self._record_failure(run, record_id, exc, retryable=True)
        self._done(run, record_id, failed=True)

    def _record_failure(
        self, run: StageRun, record_id: str, exc: BaseException, *, retryable: bool
    ) -> None:
        failure = Failure(
            run.stage,
            record_id,
            error_class_name(exc),
            error_message(exc),
            retryable,
            self.app.clock.time(),
        )
        self.store.record_failure(run.import_id, run.stage, record_id, failure.to_json())
        log_record(
            run.log,
            run.record_type,
            record_id,
            "failed",
            error_class=failure.error_class,
            retryable=retryable,
        )

    # -- shared ---------------------------------------------------------------------------------
    def _run(self, import_id: str, stage: str) -> StageRun | None:
        data = self.store.get(import_id)
        if data is None:
            import_logger("unknown", import_id).warning(
                "import gone (expired or deleted)", stage=stage, status="skipped"
            )
            return None
        stages = tuple(filter(None, data.get("stages", "").split(",")))
        state = ImportState.from_hash(data, stages)
        importer = self.importer(state.importer)
        run = StageRun(self, state, stage, importer)
        if state.status != "running":
            run.log.info("import not running", status="skipped", import_status=state.status)
            return None
        if stage not in importer.stages:
            raise ImportPipelineError(f"importer {importer.name} has no stage {stage!r}")
        return run

    def _push(self, import_id: str, stage: str) -> StagePush:
        queue = self.settings.queue
        _, payload = self.app.client.build(self.stage_job, [import_id, stage], {"queue": queue})
        payload["enqueued_at"] = self.app.clock.time()
        return StagePush(stage, queue, dumps(payload))

    def _done(self, run: StageRun, token: str, *, failed: bool = False) -> None:
        stages = run.importer.stages
        index = stages.index(run.stage)
        nxt = self._push(run.import_id, stages[index + 1]) if index + 1 < len(stages) else None
        outcome = self.store.done(
            run.import_id,
            run.stage,
            token,
            now=self.app.clock.time(),
            failed=failed,
            next_stage=nxt,
        )
        if outcome == "advanced":
            run.log.info("stage done", status="running", next_stage=nxt and nxt.stage)
        elif outcome == "finished":
            run.log.info("import finished", status="finished")
            run.importer.finished(self.get(run.import_id))


def _json(options: Mapping[str, Any]) -> str:
    try:
        return json.dumps(dict(options), sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise ImportPipelineError(f"import options must be JSON values: {exc}") from None


#: The app's :class:`Imports` in ``app.extensions``.
IMPORTS: ExtensionKey[Imports] = ExtensionKey("imports")

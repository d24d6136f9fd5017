"""Executing one fetched job: decode, find the class, run the server middleware and
``perform``, and turn the result into an :class:`~conveyor.redis.Outcome` (SPEC CORE-4/5/8)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any, Protocol

import redis

from conveyor.core._protocols import AppLike
from conveyor.core.execution import AsyncRunner, is_async, run_sync
from conveyor.core.job import Job
from conveyor.core.middleware import Chain, FetchedJob, JobContext, ServerMiddleware
from conveyor.core.payload import Payload, dumps, parse, quarantine
from conveyor.core.retry import decide
from conveyor.errors import PayloadError, UnknownJobClassError
from conveyor.logs import job_context
from conveyor.redis import Outcome
from conveyor.redis.scripts import ScriptCall

log = logging.getLogger("conveyor.processor")


class ProcessorHost(AppLike, Protocol):
    """The app as the processor and the worker see it: the core view plus the server
    middleware chain."""

    @property
    def server_middleware(self) -> Chain[ServerMiddleware]: ...


def _parse_error(raw: str) -> str:
    try:
        parse(raw)
    except PayloadError as exc:
        return str(exc)
    return "payload could not be decoded"


def utc_day(epoch: float) -> str:
    """The UTC day of ``epoch`` as the daily stat keys name it.

    >>> utc_day(0)
    '1970-01-01'
    """
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d")


def run_batch_hook(
    app: ProcessorHost, hook: str, units: Sequence[FetchedJob], *, attempts: int = 1
) -> None:
    """Run a server-middleware batch hook (``prepare_batch``, ``settle_batch``,
    ``abandon_batch``) over the decodable jobs of a batch, retrying a Redis failure up to
    ``attempts`` times (a middleware's per-job hooks cover a batch whose hook failed).

    >>> run_batch_hook(app, "prepare_batch", units)          # doctest: +SKIP
    """
    jobs = _hookable(units)
    if not jobs:
        return
    for middleware in app.server_middleware:
        for attempt in range(attempts):
            try:
                getattr(middleware, hook)(jobs)
                break
            except redis.RedisError as exc:
                log.error("%s.%s failed (%s)", type(middleware).__name__, hook, exc)
                app.clock.sleep(min(5.0, 0.1 * 2**attempt) if attempt + 1 < attempts else 0)
            except Exception:
                log.exception("%s.%s failed", type(middleware).__name__, hook)
                break


def run_stop_hooks(app: ProcessorHost, identity: str) -> None:
    """Run the server middleware's ``worker_stopped`` hooks (a failure is logged: what a
    hook would give back is then freed as a dead process's)."""
    for middleware in app.server_middleware:
        try:
            middleware.worker_stopped(identity)
        except Exception:
            log.exception("%s.worker_stopped failed", type(middleware).__name__)


def _hookable(units: Sequence[FetchedJob]) -> list[FetchedJob]:
    """The jobs of a batch the batch hooks see: decoded, and not handed off."""
    return [u for u in units if u.job is not None and u.handed_off is None]


def settle(app: ProcessorHost, units: Sequence[FetchedJob], *, attempts: int) -> list[ScriptCall]:
    """Before finished ``units`` are acknowledged: run the ``settle_batch`` hooks (see
    :func:`run_batch_hook`), and return what the server middleware want to run in the
    acknowledgement's round trip (:meth:`ServerMiddleware.settle_calls`; a middleware that
    fails there is logged and skipped)."""
    calls: list[ScriptCall] = []
    if not units or not app.server_middleware:
        return calls
    run_batch_hook(app, "settle_batch", units, attempts=attempts)
    jobs = _hookable(units)
    if not jobs:
        return calls
    for middleware in app.server_middleware:
        try:
            calls += middleware.settle_calls(jobs)
        except Exception:
            log.exception("%s.settle_calls failed", type(middleware).__name__)
    return calls


class Processor:
    """Runs jobs for one process. Thread-safe: each worker thread calls :meth:`process`."""

    def __init__(
        self, app: ProcessorHost, runner: AsyncRunner | None = None, identity: str | None = None
    ) -> None:
        self.app = app
        self.identity = identity
        self.runner = runner or AsyncRunner(app.settings.event_loop, on_close=app.stores.aclose)
        self._async_cache: dict[type[Job], bool] = {}
        self._chains: dict[type[Job], list[ServerMiddleware]] = {}
        self._chain_version = -1
        #: Set by the worker at shutdown: a KeyboardInterrupt then stops the job instead of
        #: failing it.
        self.stopping = False

    def chain_for(self, job_class: type[Job]) -> list[ServerMiddleware]:
        """The server middleware that apply to ``job_class``, cached per class."""
        chain = self.app.server_middleware
        if chain.version != self._chain_version:
            self._chains, self._chain_version = {}, chain.version
        found = self._chains.get(job_class)
        if found is None:
            found = self._chains[job_class] = [m for m in chain if m.applies_to(job_class)]
        return found

    def fetched(self, queue: str, raw: str) -> FetchedJob:
        """Decode a fetched job once (a bad payload is kept for :meth:`process` to file)."""
        try:
            job: Payload | None = parse(raw)
        except PayloadError:
            job = None
        job_class = self.app.registry.get(job["class"]) if job is not None else None
        return FetchedJob(queue, raw, job, job_class, identity=self.identity)

    def process(self, unit: FetchedJob) -> Outcome:
        """Run one fetched job and say how it ended."""
        app, queue, raw = self.app, unit.queue, unit.raw
        job = unit.job
        if job is None:
            error = _parse_error(raw)
            now = app.clock.time()
            # The error quotes the payload (arguments, maybe personal data): it goes to the dead
            # set, not to the log.
            log.error(
                "malformed payload (%d characters) from queue %s sent to the dead set",
                len(raw),
                queue,
            )
            return Outcome("dead", raw, now, quarantine(raw, queue, error, now))
        instance: Job | None = None
        with job_context(job, queue):  # jid, class and queue on every line logged meanwhile
            try:
                job_class = unit.job_class
                if job_class is None:
                    raise UnknownJobClassError(
                        f"no job class {job['class']!r} is registered in this process; it will "
                        "be retried (a newer deploy may know it)"
                    )
                instance = job_class.instantiate()
                instance.job = job
                ctx = self.run(job_class, instance, job, queue, raw, state=unit.state)
                return Outcome("gone" if ctx is not None and ctx.handed_off else "ok", raw)
            except BaseException as exc:
                # SystemExit, GeneratorExit, KeyboardInterrupt raised by a job's own code are
                # that job's failure, not the worker's (signals never reach worker threads).
                if isinstance(exc, KeyboardInterrupt) and self.stopping:
                    raise
                unit.failed = True
                return self._failed(raw, queue, exc, instance)

    def run(
        self,
        job_class: type[Job],
        instance: Job,
        job: Payload,
        queue: str,
        raw: str,
        *,
        state: dict[str, Any] | None = None,
    ) -> JobContext | None:
        """Server middleware around ``perform``; raises what ``perform`` raised."""
        chain = self.chain_for(job_class)
        if not chain:
            self._perform(job_class, instance, job)
            return None
        ctx = JobContext(self.app, job_class, instance, job, queue, raw, self.identity)
        if state is not None:
            ctx.state = state
        ran = 0
        error: BaseException | None = None
        try:
            for middleware in chain:
                ran += 1
                middleware.before_perform(ctx)
                if ctx.skipped is not None:
                    break
            if ctx.skipped is None:
                self._perform(job_class, instance, job)
        except BaseException as exc:
            error = exc
            raise
        finally:
            for middleware in reversed(chain[:ran]):
                middleware.after_perform(ctx, error)
        return ctx

    def _perform(self, job_class: type[Job], instance: Job, job: Payload) -> None:
        timeout = job_class.conveyor_options.get("timeout")
        asynchronous = self._async_cache.get(job_class)
        if asynchronous is None:
            asynchronous = self._async_cache[job_class] = is_async(job_class.perform)
        if asynchronous:
            self.runner.run(instance.perform(*job["args"]), timeout)
        else:
            run_sync(instance.perform, job["args"], timeout)

    def crashed(self, unit: FetchedJob, exc: BaseException) -> Outcome:
        """The outcome of a job whose result could not be filed (a bug in Conveyor or in a
        hook it calls): the job goes to the dead set with the reason, never stays in the
        working list of a live process.

        >>> processor.crashed(unit, TypeError("bug"))        # doctest: +SKIP
        Outcome(kind='dead', ...)
        """
        now = self.app.clock.time()
        reason = f"Conveyor could not file this job's result ({type(exc).__name__}: {exc})"
        try:
            payload = quarantine(unit.raw, unit.queue, reason, now)
        except Exception:  # even the record failed: keep the bare minimum
            payload = dumps({"class": "Conveyor::Crashed", "args": [], "error_message": reason})
        return Outcome("dead", unit.raw, now, payload)

    def _failed(self, raw: str, queue: str, exc: BaseException, instance: Job | None) -> Outcome:
        app = self.app
        now = app.clock.time()
        job = parse(raw)  # pristine copy: perform may have mutated its args
        decision = decide(job, exc, queue=queue, now=now, settings=app.settings, instance=instance)
        log.warning(
            "job %s %s failed (%s); %s",
            job.get("class"),
            job.get("jid"),
            type(exc).__name__,
            decision.kind,
        )
        if decision.kind == "dead":
            for handler in app.death_handlers:
                try:
                    handler(job, exc)
                except BaseException:  # the job still goes to the dead set
                    log.exception("death handler %r failed", handler)
            return Outcome("dead", raw, now, dumps(job))
        if decision.kind == "retry":
            return Outcome("retry", raw, decision.score, dumps(job))
        return Outcome("fail", raw)

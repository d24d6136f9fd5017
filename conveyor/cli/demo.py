"""``conveyor demo``: real jobs through a real worker, with nothing to set up.

Without a Redis URL it uses the embedded server. It declares four jobs (a sync one, an
``async def`` one, one that fails once and succeeds on its retry, one scheduled a second ahead),
enqueues them, runs a worker in this process until they are done, prints what happened and the
stats, then deletes every key it wrote (they all live under a private ``conveyor-demo-*`` prefix).

>>> run_demo(None, "~/.local/state/conveyor", Console())      # doctest: +SKIP
True
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

from conveyor.api import Api, Stats, redis_url
from conveyor.core.app import App
from conveyor.core.job import Job
from conveyor.core.middleware import JobContext, ServerMiddleware
from conveyor.core.worker import Worker
from conveyor.redis_url import mask_url
from conveyor.settings import Settings

DEMO_PREFIX = "conveyor-demo"
QUEUE = "demo"


@dataclass
class Run:
    """What happened to one demo job."""

    ticket: str
    job: str
    jid: str = ""
    attempts: int = 0
    result: str = ""
    last_error: str = ""
    duration: float = 0.0
    finished_after: float | None = None


class Recorder(ServerMiddleware):
    """Server middleware noting each attempt's duration and outcome; jobs report results here.

    Every demo job takes a unique ``ticket`` as its first argument, which keys its record.
    """

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.runs: dict[str, Run] = {}
        self._cond = threading.Condition()

    def expect(self, ticket: str, job: str, jid: str) -> None:
        """Note a job that was enqueued and must finish."""
        with self._cond:
            self.runs[ticket] = Run(ticket, job, jid)

    def before_perform(self, ctx: JobContext) -> None:
        ctx.state["demo_t0"] = time.perf_counter()
        with self._cond:
            self.runs[str(ctx.job["args"][0])].attempts += 1

    def after_perform(self, ctx: JobContext, error: BaseException | None) -> None:
        elapsed = time.perf_counter() - float(ctx.state.get("demo_t0", time.perf_counter()))
        with self._cond:
            run = self.runs[str(ctx.job["args"][0])]
            run.duration = elapsed
            if error is not None:
                run.last_error = f"{type(error).__name__}: {error}"
            else:
                run.finished_after = time.monotonic() - self.started
            self._cond.notify_all()

    def attempts(self, ticket: str) -> int:
        """Attempts started so far for ``ticket`` (the current one included)."""
        with self._cond:
            return self.runs[ticket].attempts

    def result(self, ticket: str, text: str) -> None:
        """What the job for ``ticket`` did, for the report."""
        with self._cond:
            self.runs[ticket].result = text

    def wait_all(self, timeout: float) -> bool:
        """Wait until every expected job has finished; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while any(run.finished_after is None for run in self.runs.values()):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.2))
        return True


def declare_jobs(app: App, rec: Recorder) -> dict[str, Any]:
    """The demo's jobs, registered on ``app``; returns them by name."""

    @app.job(queue=QUEUE)
    def resize_image(ticket: str, width: int, height: int) -> None:
        """A plain sync job, run on a worker thread."""
        time.sleep(0.2)  # stands in for real work
        rec.result(ticket, f"thumbnail {width // 8}x{height // 8}")

    @app.job(queue=QUEUE)
    async def fetch_page(ticket: str, url: str) -> None:
        """An ``async def`` job, run on the worker's event loop."""
        await asyncio.sleep(0.3)  # stands in for an HTTP call, on the worker's event loop
        rec.result(ticket, f"fetched {url.removeprefix('https://')} (async)")

    class ChargeCard(Job):
        """Fails on its first attempt, then succeeds on the retry."""

        queue = QUEUE
        retry = 3

        def perform(self, ticket: str, cents: int) -> None:
            attempt = rec.attempts(ticket)
            if attempt == 1:
                raise ConnectionError("payment gateway timed out (the demo fails the first try)")
            rec.result(ticket, f"charged {cents / 100:.2f}")

        def retry_in(self, count: int, exc: BaseException, job: dict[str, Any]) -> float:
            return 1.0  # instead of the default backoff (15 s and more)

    app.register(ChargeCard)

    @app.job(queue=QUEUE)
    def send_reminder(ticket: str, team: str) -> None:
        """Enqueued with ``perform_in(1, ...)``: promoted from the schedule by the poller."""
        rec.result(ticket, f"reminded {team} (scheduled 1s ahead)")

    return {
        "resize_image": resize_image,
        "fetch_page": fetch_page,
        "ChargeCard": ChargeCard,
        "send_reminder": send_reminder,
    }


def demo_settings(url: str | None, state_dir: str) -> Settings:
    """Short intervals so the scheduled and retried jobs are promoted within a second."""
    return Settings(
        redis_url=url,
        state_dir=state_dir,
        key_prefix=f"{DEMO_PREFIX}-{secrets.token_hex(4)}",
        queues=((QUEUE, 1),),
        concurrency=4,
        heartbeat_interval=0.5,
        liveness_ttl=5.0,
        recovery_interval=1.0,
        poll_interval_average=0.2,
        shutdown_timeout=5.0,
    )


def run_demo(url: str | None, state_dir: str, console: Console, timeout: float = 25.0) -> bool:
    """Run the demo; returns True when every job finished within ``timeout`` seconds."""
    settings = demo_settings(url, state_dir)
    console.print(
        f"[bold]Conveyor demo[/bold] on {mask_url(redis_url(settings))} "
        f"(keys under {settings.key_prefix}:)"
    )
    rec = Recorder()
    app = App(settings)
    app.server_middleware.add(rec)
    jobs = declare_jobs(app, rec)
    api = Api(app)
    try:
        _enqueue(jobs, rec)
        with _quiet_logs():
            finished, stats = _work(app, api, rec, timeout)
        _report(console, rec, stats, finished)
        return finished
    finally:
        api.purge_prefix()
        api.close()
        app.close()


def _enqueue(jobs: dict[str, Any], rec: Recorder) -> None:
    for ticket, name, result in (
        ("image", "resize_image", jobs["resize_image"].perform_async("image", 1920, 1080)),
        ("page", "fetch_page", jobs["fetch_page"].perform_async("page", "https://example.com")),
        ("charge", "ChargeCard", jobs["ChargeCard"].perform_async("charge", 1250)),
        ("reminder", "send_reminder", jobs["send_reminder"].perform_in(1, "reminder", "ops")),
    ):
        rec.expect(ticket, name, result.jid)


def _work(app: App, api: Api, rec: Recorder, timeout: float) -> tuple[bool, Stats]:
    worker = Worker(app)
    thread = threading.Thread(target=worker.run, kwargs={"install_signals": False}, daemon=True)
    thread.start()
    try:
        finished = rec.wait_all(timeout)
    finally:
        worker.stop()
        worker.wait(app.settings.shutdown_timeout + 5)
        thread.join(5)
    return finished, api.stats()  # after shutdown: every outcome is acknowledged and counted


@contextmanager
def _quiet_logs() -> Iterator[None]:
    """The expected failure of ChargeCard would log a warning; the table reports it instead."""
    logger = logging.getLogger("conveyor")
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(previous)


def _report(console: Console, rec: Recorder, stats: Stats, finished: bool) -> None:
    table = Table("job", "jid", "tries", "result", "took", "done at", title="Jobs")
    table.columns[1].no_wrap = True
    for run in rec.runs.values():
        result = run.result or "-"
        if run.attempts > 1 and run.last_error:
            result += f"; try 1 raised {run.last_error.split(':')[0]}"
        done = f"{run.finished_after:.1f}s" if run.finished_after is not None else "not finished"
        table.add_row(
            run.job, run.jid, str(run.attempts), result, f"{run.duration * 1000:.0f}ms", done
        )
    console.print(table)
    totals = Table("processed", "failed", "retries", "scheduled", "dead", "enqueued", title="Stats")
    totals.add_row(
        *(
            str(v)
            for v in (
                stats.processed,
                stats.failed,
                stats.retry_size,
                stats.scheduled_size,
                stats.dead_size,
                stats.enqueued,
            )
        )
    )
    console.print(totals)
    if finished:
        console.print(
            "All jobs done ('processed' counts attempts). The demo's keys were deleted; "
            "nothing else was touched."
        )
    else:
        console.print("[red]Some jobs did not finish in time.[/red]")

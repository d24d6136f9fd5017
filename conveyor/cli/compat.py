"""``conveyor compat``: the job lock file (snapshot, check) and the deploy maintenance commands
(remove-jobs, migrate-queue). See docs/compat.md."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from conveyor.api import RedisError
from conveyor.cli.common import CliState, echo_json, pass_state, progress_bar
from conveyor.cli.worker import load_app
from conveyor.core.app import App
from conveyor.errors import ConfigurationError
from conveyor.features.compat.lock import DEFAULT_LOCK, LiveProbe, check, write_lock
from conveyor.features.compat.maintenance import (
    MigrationReport,
    Progress,
    RemovalReport,
    declarations,
    migrate_queue,
    remove_jobs,
)
from conveyor.features.compat.rules import Probe
from conveyor.features.compat.store_move import StoreMoveReport, move_queue_to_store

lock_option = click.option(
    "--lock",
    "lock_path",
    default=DEFAULT_LOCK,
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The lock file.",
)
require_option = click.option(
    "-r", "--require", "spec", help="App module, e.g. myproject.jobs:app (or myproject.jobs)."
)


@click.group()
def compat() -> None:
    """Safe deploys: the job lock file, removing retired jobs, migrating renamed queues."""


@compat.command("snapshot")
@click.option("-r", "--require", "spec", required=True, help="App module, e.g. myproject.jobs")
@lock_option
def snapshot_command(spec: str, lock_path: Path) -> None:
    """Write the lock file: every job class's wire name, queue, perform signature, aliases,
    deprecated flag, and the cron entries declared in code. Commit it when a release ships."""
    lock = write_lock(load_app(spec), lock_path)
    click.echo(f"wrote {lock_path}: {len(lock['jobs'])} job class(es), {len(lock['cron'])} cron")


@compat.command("check")
@click.option("-r", "--require", "spec", required=True, help="App module, e.g. myproject.jobs")
@lock_option
@click.option(
    "--offline",
    is_flag=True,
    help="Do not look at Redis, even when a Redis URL is configured.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@pass_state
def check_command(
    state: CliState, /, spec: str, lock_path: Path, offline: bool, as_json: bool
) -> None:
    """Compare the code with the lock file; exit 1 on a change that breaks a rolling deploy,
    naming the safe sequence of releases. With a Redis URL configured (and no --offline) it
    also checks Redis: jobs still enqueued under removed names, flags, cron entries."""
    app = _app(state, spec)
    probe, note = _probe(app, offline)
    findings = check(app, lock_path, probe=probe)
    errors = [f for f in findings if f.level == "error"]
    if as_json:
        echo_json([dataclasses.asdict(f) for f in findings])
    else:
        if note:
            click.echo(note, err=True)
        for finding in findings:
            click.echo(str(finding), err=finding.level == "error")
    if errors:
        raise click.ClickException(
            f"{len(errors)} unsafe job change(s) against {lock_path}; follow the sequences "
            "above, or update the lock (conveyor compat snapshot) for a change you verified"
        )
    if not as_json:
        click.echo(f"ok: {len(findings)} warning(s)" if findings else "ok")


@compat.command("remove-jobs")
@click.argument("classes", nargs=-1)
@require_option
@click.option("--include-dead", is_flag=True, help="Also the dead and interrupted sets.")
@click.option(
    "--include-working",
    is_flag=True,
    help="Also dead processes' working lists (a live process's list is never touched).",
)
@click.option(
    "--cron",
    "cron_action",
    type=click.Choice(["destroy", "disable"]),
    default="destroy",
    show_default=True,
    help="What to do with the classes' cron entries.",
)
@click.option(
    "--allow-unknown",
    is_flag=True,
    help="Accept names nothing knows (not registered, declared, queued or scheduled).",
)
@click.option("--dry-run", is_flag=True, help="Only count what would be removed.")
@click.option("--follow", type=float, default=0.0, help="Keep removing for SECONDS.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_state
def remove_jobs_command(
    state: CliState,
    /,
    *,
    classes: tuple[str, ...],
    spec: str | None,
    include_dead: bool,
    include_working: bool,
    cron_action: str,
    allow_unknown: bool,
    dry_run: bool,
    follow: float,
    as_json: bool,
) -> None:
    """Delete every job of CLASSES (wire names; with -r and no names: the classes the app
    declares removed) from queues, schedule, retry and deferred lists, and destroy or disable
    their cron entries. Safe while workers and producers run; safe to run again."""
    with _target(state, spec) as app:
        names = list(classes) or sorted(declarations(app).removed)
        if not names:
            raise click.UsageError(
                "name the job classes (e.g. conveyor compat remove-jobs MyDeprecatedWorker), "
                "or give -r APP whose code calls "
                "conveyor.features.compat.lock.declare_removed(app, ...)"
            )
        with _progress(as_json) as progress:
            report = remove_jobs(
                app,
                names,
                include_dead=include_dead,
                include_working=include_working,
                cron="disable" if cron_action == "disable" else "destroy",
                dry_run=dry_run,
                follow=follow,
                progress=progress,
                allow_unknown=allow_unknown,
            )
    if as_json:
        echo_json({**dataclasses.asdict(report), "total": report.total})
        return
    _print_removal(report)


@compat.command("migrate-queue")
@click.argument("old", required=False)
@click.argument("new", required=False)
@require_option
@click.option("--include-dead", is_flag=True, help="Also rewrite jobs in the dead set.")
@click.option(
    "--allow-unknown",
    is_flag=True,
    help="Accept names nothing knows (not registered, declared, queued or scheduled).",
)
@click.option("--dry-run", is_flag=True, help="Only count what would move.")
@click.option("--follow", type=float, default=0.0, help="Keep moving late arrivals for SECONDS.")
@click.option(
    "--to-store",
    help="Move the queue to this store (Redis instance); NEW is then optional. The source "
    "is --store (default: default).",
)
@click.option(
    "--chunk",
    type=click.IntRange(min=1),
    default=500,
    show_default=True,
    help="Jobs per round trip when moving to another store.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_state
def migrate_queue_command(
    state: CliState,
    /,
    *,
    old: str | None,
    new: str | None,
    spec: str | None,
    include_dead: bool,
    allow_unknown: bool,
    dry_run: bool,
    follow: float,
    to_store: str | None,
    chunk: int,
    as_json: bool,
) -> None:
    """Move the jobs of queue OLD to queue NEW (with -r and no names: every rename the app
    declares): queued jobs move, scheduled and retrying ones get their queue rewritten. Run it
    after the deploy; workers should listen on both queues meanwhile.

    With --to-store B the jobs move to store B (as NEW, or OLD when NEW is not given), safely
    while workers run and if interrupted: run it again to finish (docs/scaling.md)."""
    if to_store is not None:
        if not old:
            raise click.UsageError("name the queue, e.g. migrate-queue reports --to-store b")
        with _target(state, spec) as app, _progress(as_json) as progress:
            moved = move_queue_to_store(
                app,
                old,
                new,
                to_store=to_store,
                include_dead=include_dead,
                dry_run=dry_run,
                follow=follow,
                chunk=chunk,
                progress=progress,
            )
        if as_json:
            echo_json({**dataclasses.asdict(moved), "total": moved.total})
        else:
            _print_store_move(moved)
        return
    with _target(state, spec) as app:
        if old and new:
            pairs = [(old, new)]
        elif old or new:
            raise click.UsageError("give both OLD and NEW, e.g. migrate-queue mailers mail")
        else:
            pairs = sorted(declarations(app).queue_renames.items())
        if not pairs:
            raise click.UsageError(
                "name the queues (conveyor compat migrate-queue OLD NEW), or give -r APP whose "
                "code calls conveyor.features.compat.lock.declare_queue_renamed(app, OLD, NEW)"
            )
        reports: list[MigrationReport] = []
        with _progress(as_json) as progress:
            for source, target in pairs:
                reports.append(
                    migrate_queue(
                        app,
                        source,
                        target,
                        include_dead=include_dead,
                        dry_run=dry_run,
                        follow=follow,
                        progress=progress,
                        allow_unknown=allow_unknown,
                    )
                )
    if as_json:
        echo_json([{**dataclasses.asdict(r), "total": r.total} for r in reports])
        return
    for report in reports:
        _print_migration(report)


# -- helpers --------------------------------------------------------------------------------------


def _app(state: CliState, spec: str) -> App:
    """The user's app, with the global options' settings when any were given."""
    app = load_app(spec)
    if state.overrides():
        with contextlib.suppress(ConfigurationError):  # it already uses Redis: keep its settings
            app.configure(state.settings())
    return app


@contextmanager
def _target(state: CliState, spec: str | None) -> Iterator[App]:
    if spec:
        app = _app(state, spec)
        try:
            yield app
        finally:
            app.close()
        return
    with state.api() as api:
        yield api.app


def _probe(app: App, offline: bool) -> tuple[Probe | None, str | None]:
    """A live probe when a Redis URL is configured (never the embedded server in CI)."""
    if offline:
        return None, None
    if app.settings.redis_url is None:
        return None, "note: no Redis URL configured; Redis not checked (set CONVEYOR_REDIS_URL)"
    try:
        app.store.client.ping()
    except RedisError as exc:
        return None, f"note: Redis not reachable ({exc}); checked the code only"
    return LiveProbe(app), None


@contextmanager
def _progress(quiet: bool) -> Iterator[Progress | None]:
    if quiet:
        yield None
        return
    bar = progress_bar()
    tasks: dict[str, object] = {}

    def advance(label: str, done: int, total: int) -> None:
        task = tasks.get(label)
        if task is None:
            task = tasks[label] = bar.add_task(label, total=total)
        bar.update(task, completed=done, total=max(total, done))  # type: ignore[arg-type]

    with bar:
        yield advance


def _places(counts: dict[str, int]) -> str:
    return ", ".join(f"{place} {n}" for place, n in sorted(counts.items())) or "nothing"


def _print_removal(report: RemovalReport) -> None:
    verb = "would remove" if report.dry_run else "removed"
    names = ", ".join(report.classes)
    click.echo(f"{verb} {report.total} job(s) of {names}: {_places(report.removed)}")
    for entry, outcome in sorted(report.cron.items()):
        click.echo(f"cron {entry}: {outcome}")
    if report.running:
        click.echo(f"{report.running} running now in live processes (left to finish)")
    if report.orphaned:
        click.echo(
            f"{report.orphaned} in dead processes' working lists, left for recovery to requeue: "
            "run again after recovery, or pass --include-working"
        )


def _print_migration(report: MigrationReport) -> None:
    verb = "would move" if report.dry_run else "moved"
    click.echo(
        f"{verb} {report.total} job(s) from {report.old} to {report.new}: {_places(report.moved)}"
    )
    if report.remaining:
        click.echo(
            f"{report.remaining} job(s) arrived on {report.old} meanwhile: run again, or with "
            "--follow SECONDS while producers still push there"
        )
    elif report.forgotten:
        click.echo(f"queue {report.old} is empty and no longer listed")


def _print_store_move(report: StoreMoveReport) -> None:
    verb = "would move" if report.dry_run else "moved"
    click.echo(
        f"{verb} {report.total} job(s) from queue {report.old} of store {report.from_store} to "
        f"queue {report.new} of store {report.to_store}: {_places(report.moved)}"
    )
    if report.resumed:
        click.echo(f"{report.resumed} job(s) left by an interrupted run delivered first")
    if report.remaining:
        click.echo(
            f"{report.remaining} job(s) arrived on {report.old} in store {report.from_store} "
            "meanwhile: run again, or with --follow SECONDS while producers still push there"
        )

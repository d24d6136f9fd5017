"""``conveyor import run|status|retry-missing``: project-export imports (SPEC IMP-*).

``run`` validates the archive (nothing is written when it is refused), starts the import and,
unless ``--no-work``, runs a worker in this process until the import ends, drawing a progress
bar with ``--watch``. With ``--no-work`` the jobs wait for workers started with
``conveyor worker -r conveyor.features.imports.project.worker:app``.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Any

import click
from rich.table import Table

from conveyor import logs
from conveyor.cli.common import CliState, clip, console, echo_json, pass_state, progress_bar, when
from conveyor.core.app import App
from conveyor.core.worker import Worker
from conveyor.features.imports import Imports, ImportSettings, ImportState

IMPORT_QUEUE = ImportSettings().queue
#: Seconds between polls of an import's state while waiting for it.
POLL = 0.2


@click.group("import")
def import_group() -> None:
    """Import project exports: run, status, retry-missing."""


def _need_sqlalchemy() -> None:
    """The importer needs the ``imports`` extra; the rest of the CLI does not."""
    try:
        import sqlalchemy  # noqa: F401
    except ImportError:
        raise click.ClickException(
            "the project importer needs SQLAlchemy: pip install 'conveyor[imports]'"
        ) from None


def _imports(state: CliState) -> tuple[App, Imports]:
    _need_sqlalchemy()
    from conveyor.features.imports.project.worker import build_app

    # The worker this command may run takes import jobs only.
    app = build_app(state.settings(queues=(IMPORT_QUEUE,)))
    _configure_logging(app)
    return app, Imports.of(app)


def _configure_logging(app: App) -> None:
    """One line per record, JSON or text per CONVEYOR_LOG_FORMAT, scrubbed (docs/logging.md):
    the worker this command runs logs as ``conveyor worker`` does. A program that set up
    logging itself (an embedding app, a test harness) keeps its own handlers."""
    root = logging.getLogger()
    if all(getattr(h, "_conveyor_logs", False) for h in root.handlers):
        logs.configure(app.settings)


@import_group.command("run")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--db", help="SQLAlchemy URL of the database [default: ./conveyor-imports.db].")
@click.option("--watch/--no-watch", default=False, help="Draw a progress bar until it ends.")
@click.option(
    "--work/--no-work",
    default=True,
    show_default=True,
    help="Run a worker in this process until the import ends.",
)
@click.option("--workdir", type=click.Path(file_okay=False), help="Where to extract the archive.")
@pass_state
def import_run(
    state: CliState,
    /,
    file: str,
    db: str | None,
    *,
    watch: bool,
    work: bool,
    workdir: str | None,
) -> None:
    """Validate FILE (a project export .tar.gz) and import it."""
    app, imports = _imports(state)
    from conveyor.features.imports.project import default_db_url, start_project_import

    try:
        import_id = start_project_import(imports, file, db or default_db_url(), workdir=workdir)
        click.echo(f"import {import_id} started")
        _follow(app, imports, import_id, watch=watch, work=work)
    finally:
        app.close()


@import_group.command("retry-missing")
@click.argument("import_id")
@click.option("--watch/--no-watch", default=False, help="Draw a progress bar until it ends.")
@click.option("--work/--no-work", default=True, show_default=True, help="Run a worker here.")
@pass_state
def import_retry_missing(state: CliState, /, import_id: str, watch: bool, work: bool) -> None:
    """Import again what IMPORT_ID left missing, without changing rows that exist."""
    app, imports = _imports(state)
    try:
        retry_id = imports.retry_missing(import_id)
        click.echo(f"import {retry_id} started (missing records of {import_id})")
        _follow(app, imports, retry_id, watch=watch, work=work)
    finally:
        app.close()


@import_group.command("status")
@click.argument("import_id", required=False)
@click.option("--failures", default=20, show_default=True, help="Failed records to list.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def import_status(state: CliState, /, import_id: str | None, failures: int, as_json: bool) -> None:
    """Recent imports, or one import with its stages and failed records."""
    app, imports = _imports(state)
    try:
        if import_id is None:
            _print_list(imports.recent(), as_json=as_json)
            return
        record = imports.get(import_id)
        failed = imports.failures(import_id)
        if as_json:
            echo_json(
                {
                    **_public(record),
                    "failures": [dataclasses.asdict(f) for f in failed[:failures]],
                }
            )
            return
        _print_state(record)
        _print_failures(failed, failures)
    finally:
        app.close()


# -- waiting and printing ----------------------------------------------------------------------
def _follow(app: App, imports: Imports, import_id: str, *, watch: bool, work: bool) -> None:
    if not work and not watch:
        click.echo(f"waiting for workers; follow it with: conveyor import status {import_id}")
        return
    worker = Worker(app) if work else None
    thread = None
    if worker is not None:
        thread = threading.Thread(target=worker.run, kwargs={"install_signals": False})
        thread.daemon = True
        thread.start()
    try:
        final = _wait(imports, import_id, watch=watch)
    finally:
        if worker is not None and thread is not None:
            worker.stop()
            thread.join(60)
    _print_state(final)
    _print_failures(imports.failures(import_id), 20)
    if final.status != "finished":
        raise click.exceptions.Exit(1)


def _wait(imports: Imports, import_id: str, *, watch: bool) -> ImportState:
    current = imports.get(import_id)
    if not watch:
        while current.active:
            time.sleep(POLL)
            current = imports.get(import_id)
        return current
    with progress_bar() as bar:
        task = bar.add_task(current.stage, total=None)
        while current.active:
            bar.update(
                task,
                description=f"{current.importer} {current.stage}",
                completed=current.done,
                total=max(current.total, 1),
            )
            time.sleep(POLL)
            current = imports.get(import_id)
        bar.update(task, completed=current.done, total=max(current.total, 1))
    return current


def _public(record: ImportState) -> dict[str, Any]:
    """The record as JSON, with a password in the database URL masked."""
    data = dataclasses.asdict(record)
    db = data["options"].get("db")
    if isinstance(db, str):
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            data["options"]["db"] = make_url(db).render_as_string(hide_password=True)
        except ArgumentError:
            data["options"]["db"] = "(not a valid URL)"
    return data


def _print_list(records: list[ImportState], *, as_json: bool) -> None:
    if as_json:
        echo_json([_public(r) for r in records])
        return
    if not records:
        click.echo("no imports")
        return
    now = time.time()
    table = Table("id", "importer", "mode", "status", "stage", "records", "failed", "created")
    for r in records:
        table.add_row(
            r.id,
            r.importer,
            r.mode,
            r.status,
            r.stage,
            f"{r.done}/{r.total}",
            str(r.failed),
            when(r.created_at, now),
        )
    console().print(table)


def _print_state(record: ImportState) -> None:
    now = time.time()
    out = console()
    summary = Table("field", "value", title=f"Import {record.id}", show_header=False)
    rows: list[tuple[str, Any]] = [
        ("importer", record.importer),
        ("mode", record.mode + (f" (of {record.parent})" if record.parent else "")),
        ("status", record.status),
        ("stage", record.stage),
        ("records", f"{record.done}/{record.total} ({record.failed} failed)"),
        ("deferred", str(record.deferred)),
        ("created", when(record.created_at, now)),
        ("last progress", when(record.progressed_at, now)),
        ("finished", when(record.finished_at, now)),
    ]
    if record.error:
        rows.append(("error", clip(record.error, 100)))
    for name, value in rows:
        summary.add_row(name, value)
    out.print(summary)
    stages = Table("stage", "records", "failed", "done at")
    for s in record.stages:
        stages.add_row(s.name, f"{s.done}/{s.total}", str(s.failed), when(s.advanced_at, now))
    out.print(stages)


def _print_failures(failed: list[Any], limit: int) -> None:
    if not failed or limit <= 0:
        return
    table = Table("stage", "record", "error", "retryable", "message", title="Failed records")
    for f in failed[:limit]:
        table.add_row(
            f.stage, f.record_id, f.error_class, "yes" if f.retryable else "no", clip(f.message, 70)
        )
    out = console()
    out.print(table)
    if len(failed) > limit:
        out.print(f"... {len(failed) - limit} more (use --failures)")

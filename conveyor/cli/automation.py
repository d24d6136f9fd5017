"""``conveyor automation``: check settings, start and watch runs, look at runs and nodes.

``check FILE`` validates a settings file. ``run``, ``status`` and ``nodes`` talk to the workflow
engine through Redis (``--redis-url``), with the settings file given by ``--settings`` or
``CONVEYOR_AUTOMATION_SETTINGS``; the nodes (``conveyor automation node``) do the work.

>>> from click.testing import CliRunner
>>> CliRunner().invoke(main, ["automation", "run", "migrate_tmpimg",          # doctest: +SKIP
...                           "--settings", "settings.json", "--watch"])
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click
from rich.table import Column, Table

from conveyor.automation import (
    AutomationSettings,
    AutomationSettingsError,
    load_automation_settings,
)
from conveyor.cli.common import (
    CliState,
    clip,
    console,
    echo_json,
    pass_state,
    progress_bar,
    when,
)

if TYPE_CHECKING:
    from conveyor.automation.engine import Automation
    from conveyor.automation.runs import RunInfo

SETTINGS_ENV = "CONVEYOR_AUTOMATION_SETTINGS"
_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

settings_option = click.option(
    "-s",
    "--settings",
    "settings_file",
    envvar=SETTINGS_ENV,
    type=click.Path(dir_okay=False),
    help=f"The automation settings JSON file. [env {SETTINGS_ENV}]",
)


@click.group()
def automation() -> None:
    """Automation workflows (functions.backend.automation in the settings JSON file)."""


@automation.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
def check(file: str) -> None:
    """Validate FILE's automation settings: every problem with the JSON path of its field.

    Exits 1 when there are problems; warnings (e.g. a playbook not found here) do not fail.
    """
    try:
        settings = load_automation_settings(file)
    except AutomationSettingsError as exc:
        for problem in exc.problems:
            click.echo(f"error: {problem}", err=True)
        count = len(exc.problems)
        click.echo(f"{file}: {count} problem{'s' if count != 1 else ''}", err=True)
        raise SystemExit(1) from None
    for warning in settings.warnings:
        click.echo(f"warning: {warning}", err=True)
    state = "enabled" if settings.meta.enable else "disabled (meta.enable is false)"
    click.echo(
        f"ok: {len(settings.workflows)} workflow(s) "
        f"[{', '.join(settings.names)}], automation {state}"
    )


def parse_vars(pairs: tuple[str, ...]) -> dict[str, str]:
    """``("k=v", "path=/a=b")`` -> ``{"k": "v", "path": "/a=b"}``: the first ``=`` separates;
    the value is taken as it is (no percent-decoding: this is not a URL).

    >>> parse_vars(("src=/tmp/a=b.jpg",))
    {'src': '/tmp/a=b.jpg'}
    """
    out: dict[str, str] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq:
            raise click.BadParameter(f"{pair!r} has no '='; write key=value", param_hint="--vars")
        if not _KEY_RE.match(key):
            raise click.BadParameter(
                f"bad variable name {key!r}: letters, digits and '_', not starting with a digit",
                param_hint="--vars",
            )
        if key in out:
            raise click.BadParameter(f"variable {key!r} is given twice", param_hint="--vars")
        out[key] = value
    return out


@contextmanager
def _engine(state: CliState, settings_file: str | None, *, required: bool) -> Iterator[Automation]:
    """An engine over the CLI's Redis (not a node: it starts and reads runs only)."""
    from conveyor.automation.engine import Automation
    from conveyor.core.app import App

    if settings_file:
        try:
            settings = load_automation_settings(settings_file)
        except AutomationSettingsError as exc:
            raise click.ClickException(
                f"{settings_file}: invalid automation settings; run `conveyor automation check "
                f"{settings_file}` to see every problem ({len(exc.problems)})"
            ) from None
    elif required:
        raise click.UsageError(
            f"name the automation settings file with --settings or {SETTINGS_ENV}"
        )
    else:
        settings = AutomationSettings()
    app = App(state.settings())
    try:
        yield Automation(app, settings, node=f"cli:{time.time():.0f}")
    finally:
        app.close()


@automation.command("run")
@click.argument("name")
@settings_option
@click.option(
    "--vars", "pairs", multiple=True, metavar="KEY=VALUE", help="A request variable (repeat)."
)
@click.option("--prepare/--no-prepare", default=True, show_default=True, help="Run prepare.")
@click.option("--complete/--no-complete", default=True, show_default=True, help="Run complete.")
@click.option("--watch", is_flag=True, help="Follow the run with a progress bar until it ends.")
@click.option("--poll", type=click.FloatRange(min=0.05), default=0.5, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON.")
@pass_state
def run(
    state: CliState,
    /,
    *,
    name: str,
    settings_file: str | None,
    pairs: tuple[str, ...],
    prepare: bool,
    complete: bool,
    watch: bool,
    poll: float,
    as_json: bool,
) -> None:
    """Start a batch run of workflow NAME; the workflow's master picks it up.

    An operator's run (unlike an HTTP client's) runs prepare unless --no-prepare, and does not
    need allowApiExecution. With --watch the command waits for the run to end and exits 1 when
    the run failed or any task failed (Ctrl-C stops watching, not the run).

    Example: conveyor automation run migrate_tmpimg -s settings.json --vars src_dir=/tmp/in --watch
    """
    request_vars = parse_vars(pairs)
    with _engine(state, settings_file, required=True) as engine:
        info = engine.start_run(
            name, request_vars=request_vars, prepare=prepare, complete=complete, source="cli"
        )
        if not watch:
            if as_json:
                echo_json(info.as_dict())
            else:
                click.echo(f"run {info.id} of {info.workflow} started ({info.state})")
                click.echo(f"follow it with: conveyor automation status {info.id}")
            return
        click.echo(f"run {info.id} of {info.workflow} started", err=True)
        final = _watch(engine, info.id, poll)
    if as_json:
        echo_json(final.as_dict())
    else:
        _print_run(final)
    if final.state == "failed" or final.failed:
        raise SystemExit(1)


def _watch(engine: Automation, run_id: str, poll: float) -> RunInfo:
    """Poll the run until it finished, drawing a progress bar of ended tasks."""
    with progress_bar() as bar:
        task = bar.add_task("waiting for the master", total=None)
        while True:
            info = engine.run_status(run_id)
            if info is None:
                raise click.ClickException(f"run {run_id} vanished (expired from Redis)")
            bar.update(
                task,
                total=info.total or None,
                completed=info.ended,
                description=f"{info.workflow} {info.state} (failed {info.failed})",
            )
            if info.finished:
                return info
            time.sleep(poll)


def _print_run(info: RunInfo, now: float | None = None) -> None:
    now = time.time() if now is None else now
    lines = [
        ("run", info.id),
        ("workflow", info.workflow),
        ("state", info.state),
        (
            "tasks",
            f"{info.ended}/{info.total} ended, {info.succeeded} ok, {info.failed} failed, "
            f"{info.running} running",
        ),
        ("sizes", f"src {info.src_size_total} bytes, dest {info.dest_size_total} bytes"),
        (
            "steps",
            ", ".join(
                s
                for s, on in (
                    ("prepare", info.prepare),
                    ("execute", True),
                    ("complete", info.complete),
                )
                if on
            ),
        ),
        ("master", info.master or "-"),
        ("source", info.source or "-"),
        ("created", when(info.created_at, now)),
        ("finished", when(info.finished_at, now)),
    ]
    if info.request:
        lines.append(("vars", clip(", ".join(f"{k}={v}" for k, v in info.request.items()), 100)))
    if info.error:
        lines.append(("error", info.error))
    if info.finished:
        lines.append(("summary", ", ".join(f"{k}={v}" for k, v in info.summary.items())))
    for key, value in lines:
        click.echo(f"{key:>9}: {value}")


@automation.command("status")
@click.argument("run_id", required=False)
@settings_option
@click.option("--workflow", help="Only runs of this workflow (without RUN_ID).")
@click.option("--limit", type=click.IntRange(1, 200), default=20, show_default=True)
@click.option("--tasks", is_flag=True, help="With RUN_ID: each task's result.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def status(
    state: CliState,
    /,
    *,
    run_id: str | None,
    settings_file: str | None,
    workflow: str | None,
    limit: int,
    tasks: bool,
    as_json: bool,
) -> None:
    """Show run RUN_ID (progress, counters, summary), or the recent runs."""
    with _engine(state, settings_file, required=False) as engine:
        if run_id is None:
            runs = engine.runs(workflow, limit)
            if as_json:
                echo_json([r.as_dict() for r in runs])
                return
            _runs_table(runs)
            return
        info = engine.run_status(run_id)
        if info is None:
            raise click.ClickException(f"no run {run_id!r} (unknown or expired)")
        results = engine.task_results(run_id) if tasks else {}
    if as_json:
        body: dict[str, Any] = info.as_dict()
        if tasks:
            body["tasks"] = [{"index": i, **r} for i, r in sorted(results.items())]
        echo_json(body)
        return
    _print_run(info)
    for index, result in sorted(results.items()):
        outcome = "ok" if result.get("ok") else "FAILED"
        extra = "" if result.get("ok") else f" {clip(str(result.get('error') or ''), 80)}"
        click.echo(
            f"  task {index}: {outcome} in {float(result.get('duration') or 0):.2f}s on "
            f"{result.get('node', '-')}{extra}"
        )


def _runs_table(runs: list[RunInfo]) -> None:
    if not runs:
        click.echo("no runs")
        return
    now = time.time()
    table = Table(Column("run", no_wrap=True), "workflow", "state", "tasks", "failed", "created")
    for r in runs:
        table.add_row(
            r.id,
            r.workflow,
            r.state,
            f"{r.ended}/{r.total}",
            str(r.failed),
            when(r.created_at, now),
        )
    console().print(table)


@automation.command("nodes")
@settings_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def nodes(state: CliState, /, settings_file: str | None, as_json: bool) -> None:
    """The automation nodes with a recent heartbeat: throttled or not, CPU, masterships."""
    with _engine(state, settings_file, required=False) as engine:
        found = engine.nodes()
    if as_json:
        echo_json([n.as_dict() for n in found])
        return
    if not found:
        click.echo("no automation nodes")
        return
    now = time.time()
    table = Table(
        Column("node", no_wrap=True), "state", "cpu avg", "master of", "tasks run", "last seen"
    )
    for n in found:
        cpu = "-" if n.cpu_average is None else f"{n.cpu_average:.0f}%"
        masters = ", ".join(f"{wf} (fence {fence})" for wf, fence in n.masters.items()) or "-"
        table.add_row(
            n.id,
            "throttled" if n.throttled else "accepting",
            cpu,
            masters,
            str(n.tasks_run),
            when(n.last_seen, now),
        )
    console().print(table)

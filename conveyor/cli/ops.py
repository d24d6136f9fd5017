"""Operator commands: ``stats``, ``processes``, ``busy``, ``enqueue``, ``redis`` and ``demo``."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import click
from rich.table import Table

from conveyor.api import Overview, ProcessInfo, redis_url, stop_embedded
from conveyor.cli.common import (
    CliState,
    console,
    duration,
    echo_json,
    pass_state,
    short,
    when,
)
from conveyor.redis_url import mask_url

# -- stats -------------------------------------------------------------------------------------


@click.command()
@click.option("--days", default=7, show_default=True, help="Days of history to show.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@pass_state
def stats(state: CliState, /, days: int, as_json: bool) -> None:
    """Totals, set sizes, queues, busy threads and daily history; with several stores and no
    --store, summed across them, with each store's own totals."""
    if not 1 <= days <= 1825:
        raise click.BadParameter(f"{days} is out of range; give 1 to 1825", param_hint="--days")
    with state.api() as api:
        overview = api.overview() if state.store is None and len(api.store_names()) > 1 else None
        snapshot = overview.total if overview else api.stats()
        history = api.history_all(days) if overview else api.history(days)
    if as_json:
        stores = {"stores": [dataclasses.asdict(s) for s in overview.stores]} if overview else {}
        echo_json(
            {**dataclasses.asdict(snapshot), "history": dataclasses.asdict(history), **stores}
        )
        return
    out = console()
    if overview is not None:
        out.print(_stores_table(overview))
    title = "Conveyor stats" + (" (all stores)" if overview else f" (store {api.store_name})")
    totals = Table("stat", "value", title=title)
    for name, value in (
        ("processed", snapshot.processed),
        ("failed", snapshot.failed),
        ("enqueued", snapshot.enqueued),
        ("busy", snapshot.workers_size),
        ("processes", snapshot.processes_size),
        ("scheduled", snapshot.scheduled_size),
        ("retries", snapshot.retry_size),
        ("dead", snapshot.dead_size),
        ("interrupted", snapshot.interrupted_size),
        ("default latency", duration(snapshot.default_queue_latency)),
    ):
        totals.add_row(name, str(value))
    out.print(totals)
    daily = Table("day", "processed", "failed", title=f"Last {days} day(s)")
    for day, processed in history.processed.items():
        daily.add_row(day, str(processed), str(history.failed[day]))
    out.print(daily)


def _stores_table(overview: Overview) -> Table:
    table = Table(
        "store",
        "redis",
        "enqueued",
        "processed",
        "failed",
        "retries",
        "dead",
        "processes",
        title="Stores",
    )
    for part in overview.stores:
        if part.stats is None:
            table.add_row(part.name, part.url, f"unreachable: {part.error}", *[""] * 5)
            continue
        s = part.stats
        counts = (s.enqueued, s.processed, s.failed, s.retry_size, s.dead_size, s.processes_size)
        table.add_row(part.name, part.url, *map(str, counts))
    return table


# -- processes ---------------------------------------------------------------------------------


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def processes(ctx: click.Context, as_json: bool) -> None:
    """Live worker processes (subcommands: list, quiet, stop)."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_processes, as_json=as_json)


@processes.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_state
def list_processes(state: CliState, /, as_json: bool = False) -> None:
    """List live processes, with their heartbeat, load and state."""
    with state.api() as api:
        found, now = api.processes.list(), api.now()
    if as_json:
        echo_json([dataclasses.asdict(p) for p in found])
        return
    table = Table("identity", "pid", "queues", "busy", "rss", "started", "beat", "state", "health")
    for p in found:
        table.add_row(
            p.identity,
            str(p.pid or "-"),
            ",".join(p.queues),
            f"{p.busy}/{p.concurrency}",
            f"{p.rss_kb // 1024} MB",
            when(p.started_at, now),
            duration(max(0.0, now - p.beat)) + " ago" if p.beat else "-",
            "quiet" if p.quiet else "running",
            _health_text(p),
        )

    if not found:
        table.caption = "no live processes"
    console().print(table)


def _signal_command(action: str, what: str) -> click.Command:
    @click.command(action, help=f"Ask the process IDENTITY (or --all) to {what}.")
    @click.argument("identity", required=False)
    @click.option("--all", "all_", is_flag=True, help="Every live process.")
    @pass_state
    def command(state: CliState, /, identity: str | None, all_: bool) -> None:
        if (identity is None) == (not all_):
            raise click.UsageError("give either an IDENTITY or --all (not both)")
        with state.api() as api:
            if identity is not None:
                getattr(api.processes, action)(identity)
                click.echo(f"sent {action} to {identity}")
                return
            count = getattr(api.processes, f"{action}_all")()
        click.echo(f"sent {action} to {count} process(es)")

    return command


processes.add_command(_signal_command("quiet", "stop fetching new jobs"))
processes.add_command(_signal_command("stop", "finish its jobs and shut down"))


# -- busy --------------------------------------------------------------------------------------


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_state
def busy(state: CliState, /, as_json: bool) -> None:
    """Jobs running right now, longest running first."""
    with state.api() as api:
        work, now = api.work.list(), api.now()
    if as_json:
        echo_json(
            [
                {
                    "identity": w.identity,
                    "thread": w.thread_id,
                    "queue": w.queue,
                    "run_at": w.run_at,
                    "job": w.job.to_dict(),
                }
                for w in work
            ]
        )
        return
    table = Table("process", "thread", "queue", "class", "jid", "args", "running for")
    for w in work:
        running = duration(max(0.0, now - w.run_at)) if w.run_at else "-"
        table.add_row(
            w.identity,
            w.thread_id,
            w.queue,
            w.job.job_class,
            w.job.jid,
            short(w.job.args, 40),
            running,
        )
    if not work:
        table.caption = "nothing running"
    console().print(table)


# -- enqueue -----------------------------------------------------------------------------------


def parse_json_args(values: tuple[str, ...]) -> list[Any]:
    """Each command-line value decoded as JSON; a bad one is named in the error.

    >>> parse_json_args(('"bob"', "5", "[1, 2]"))
    ['bob', 5, [1, 2]]
    """
    args: list[Any] = []
    for position, value in enumerate(values, start=1):
        try:
            args.append(json.loads(value))
        except ValueError as exc:
            raise click.BadParameter(
                f"argument {position} {value!r} is not valid JSON ({exc}); write numbers as 5, "
                f"strings with JSON quotes as '\"{value}\"', lists as '[1, 2]'",
                param_hint="JSON_ARG",
            ) from None
    return args


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("class_name", metavar="CLASS")
@click.argument("json_args", metavar="[JSON_ARG]...", nargs=-1)
@click.option("-q", "--queue", help="Queue to push to (default: 'default').")
@click.option("--in", "delay", type=float, help="Run after this many seconds instead of now.")
@pass_state
def enqueue(
    state: CliState,
    class_name: str,
    json_args: tuple[str, ...],
    queue: str | None,
    delay: float | None,
) -> None:
    """Enqueue a job of CLASS (any name a worker answers to) with JSON arguments.

    Example: conveyor enqueue HardWorker '"bob"' 5 --queue critical
    """
    args = parse_json_args(json_args)
    if delay is not None and delay < 0:
        raise click.BadParameter(f"{delay} is negative; give seconds >= 0", param_hint="--in")
    with state.api() as api:
        at = api.now() + delay if delay else None
        result = api.enqueue(class_name, args, queue=queue, at=at)
    target = queue or "default"
    if not result:
        click.echo(f"not enqueued: {result.dropped}")
    elif at is not None:
        click.echo(
            f"scheduled {class_name} {result.jid} on queue {target} in {duration(delay or 0)}"
        )
    else:
        click.echo(f"enqueued {class_name} {result.jid} on queue {target}")


# -- redis and demo ----------------------------------------------------------------------------


@click.group("redis")
def redis_group() -> None:
    """The Redis in use (the embedded server unless a URL is configured)."""


@redis_group.command("url")
@pass_state
def redis_url_command(state: CliState, /) -> None:
    """Print the Redis URL (its password masked), starting the embedded server if it is the
    one in use."""
    click.echo(mask_url(redis_url(state.settings())))


@redis_group.command("stop")
@pass_state
def redis_stop(state: CliState, /) -> None:
    """Stop the embedded server under the state directory (its data is saved)."""
    settings = state.settings()
    if stop_embedded(settings):
        click.echo(f"stopped the embedded Redis under {settings.state_dir}")
    else:
        click.echo(f"no embedded Redis is running under {settings.state_dir}")


@click.command()
@click.option("--timeout", default=25.0, show_default=True, help="Give up after this many seconds.")
@pass_state
def demo(state: CliState, /, timeout: float) -> None:
    """Run real jobs on a worker in this process and show what happened.

    Needs no Redis set up: without --redis-url it uses the embedded server. Keys live under a
    private prefix and are deleted at the end.
    """
    from conveyor.cli.demo import run_demo  # imports the worker machinery only when asked

    settings = state.settings()
    if not run_demo(settings.redis_url, settings.state_dir, console(), timeout=timeout):
        raise click.ClickException("the demo did not finish in time; see the table above")


def _health_text(p: ProcessInfo) -> str:
    """``ok``, ``-`` (no report: Sidekiq, an older Conveyor) or the failing loops, e.g.
    ``fetch failing (3 errors)``; loops that met errors and carried on show their count."""
    if not p.health:
        return "-"
    errors = p.loop_errors()
    failing = p.failing_loops
    if failing:
        return ", ".join(f"{name} failing ({errors.get(name, 0)} errors)" for name in failing)
    survived = {name: n for name, n in errors.items() if n}
    if survived:
        return (
            "ok (" + ", ".join(f"{name}: {n} errors" for name, n in sorted(survived.items())) + ")"
        )
    return "ok"

"""``conveyor queues`` and ``conveyor retry|dead|scheduled|interrupted``: list, retry, delete,
kill jobs, through the data API."""

from __future__ import annotations

from collections.abc import Callable

import click
from rich.table import Table

from conveyor.api import Api, JobRecord, JobSet, KillableSet
from conveyor.cli.common import (
    CliState,
    clip,
    console,
    duration,
    echo_json,
    pass_state,
    progress_bar,
    short,
    when,
)
from conveyor.errors import NotFoundError

# -- queues ------------------------------------------------------------------------------------


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def queues(ctx: click.Context, as_json: bool) -> None:
    """Queues with their sizes and latency (subcommands: jobs, clear)."""
    if ctx.invoked_subcommand is not None:
        return
    state = ctx.find_object(CliState) or CliState()
    with state.api() as api:
        rows = [(q.name, q.size(), q.latency()) for q in api.queues()]
    if as_json:
        echo_json([{"name": n, "size": s, "latency": lat} for n, s, lat in rows])
        return
    table = Table("queue", "size", "latency", title="Queues")
    for name, size, latency in rows:
        table.add_row(name, str(size), duration(latency) if size else "-")
    if not rows:
        table.caption = "no queues yet"
    console().print(table)


@queues.command("jobs")
@click.argument("name")
@click.option("-n", "--limit", default=25, show_default=True, help="Jobs to show.")
@click.option("--offset", default=0, show_default=True, help="Jobs to skip (newest first).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_state
def queue_jobs(state: CliState, name: str, limit: int, offset: int, as_json: bool) -> None:
    """List the jobs waiting in queue NAME, newest first."""
    with state.api() as api:
        jobs = api.queue(name).jobs(offset, limit)
        now = api.now()
    if as_json:
        echo_json([job.to_dict() for job in jobs])
        return
    table = Table("jid", "class", "args", "enqueued", title=f"Queue {name}")
    for job in jobs:
        table.add_row(job.jid, job.job_class, short(job.args), when(job.enqueued_at, now))
    console().print(table)


@queues.command("clear")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_state
def queue_clear(state: CliState, name: str, yes: bool) -> None:
    """Delete every job in queue NAME (asks first unless --yes)."""
    with state.api() as api:
        queue = api.queue(name)
        size = queue.size()
        if size == 0 and name not in {q.name for q in api.queues()}:
            raise NotFoundError(f"no queue named {name!r}; `conveyor queues` lists them")
        if not yes:
            click.confirm(f"Delete all {size} job(s) in queue {name!r}?", abort=True)
        deleted = queue.clear()
    click.echo(f"cleared queue {name}: {deleted} job(s) deleted")


# -- sorted sets -------------------------------------------------------------------------------

#: CLI name -> (data API attribute, what the set holds).
SETS: dict[str, tuple[str, str]] = {
    "retry": ("retries", "failed jobs waiting for their next attempt"),
    "dead": ("dead", "jobs that exhausted their retries"),
    "scheduled": ("scheduled", "jobs waiting for their perform_in/perform_at time"),
    "interrupted": ("interrupted", "jobs parked after too many crash recoveries"),
}


def _job_set(api: Api, cli_name: str) -> JobSet:
    job_set = getattr(api, SETS[cli_name][0])
    assert isinstance(job_set, JobSet)
    return job_set


def _check_target(jid: str | None, all_: bool) -> None:
    if (jid is None) == (not all_):
        raise click.UsageError("give either a JID or --all (not both)")


def _bulk(label: str, work: Callable[[Callable[[int, int], None]], int]) -> int:
    with progress_bar() as bar:
        task = bar.add_task(label, total=None)

        def report(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        return work(report)


def _print_jobs(jobs: list[JobRecord], now: float, title: str) -> None:
    table = Table("jid", "class", "queue", "when", "args", "error", title=title)
    for job in jobs:
        error = f"{job.error_class}: {job.error_message}" if job.error_class else ""
        table.add_row(
            job.jid or "(invalid)",
            job.job_class,
            job.queue,
            when(job.score, now),
            short(job.args, 40),
            clip(error, 60),
        )
    if not jobs:
        table.caption = "empty"
    console().print(table)


def make_set_group(cli_name: str) -> click.Group:
    """The command group for one sorted set: list, show, retry, delete (and kill)."""

    @click.group(
        name=cli_name,
        invoke_without_command=True,
        help=f"The {cli_name} set: {SETS[cli_name][1]}.",
    )
    @click.pass_context
    def group(ctx: click.Context) -> None:
        if ctx.invoked_subcommand is None:
            ctx.invoke(list_jobs)

    list_jobs = _list_command(cli_name)
    for command in (list_jobs, _show_command(cli_name), _retry_command(cli_name)):
        group.add_command(command)
    group.add_command(_delete_command(cli_name))
    if cli_name != "dead":
        group.add_command(_kill_command(cli_name))
    return group


def _list_command(cli_name: str) -> click.Command:
    @click.command("list")
    @click.option("-n", "--limit", default=25, show_default=True, help="Entries to show.")
    @click.option("--offset", default=0, show_default=True, help="Entries to skip.")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
    @pass_state
    def list_jobs(
        state: CliState, /, limit: int = 25, offset: int = 0, as_json: bool = False
    ) -> None:
        """List entries (retry/scheduled: soonest first; dead/interrupted: newest first)."""
        with state.api() as api:
            job_set = _job_set(api, cli_name)
            jobs, size, now = job_set.jobs(offset, limit), job_set.size(), api.now()
        if as_json:
            echo_json([job.to_dict() for job in jobs])
            return
        _print_jobs(jobs, now, f"{cli_name} set ({size} job(s))")

    return list_jobs


def _show_command(cli_name: str) -> click.Command:
    @click.command("show")
    @click.argument("jid")
    @pass_state
    def show(state: CliState, /, jid: str) -> None:
        """Print one entry's full payload (with its decoded backtrace) as JSON."""
        with state.api() as api:
            job = _job_set(api, cli_name).get(jid)
        echo_json({**job.to_dict(), "error_backtrace": job.error_backtrace()})

    return show


def _retry_command(cli_name: str) -> click.Command:
    @click.command("retry")
    @click.argument("jid", required=False)
    @click.option("--all", "all_", is_flag=True, help="Every entry.")
    @pass_state
    def retry(state: CliState, /, jid: str | None, all_: bool) -> None:
        """Move the job JID (or --all) onto its queue now."""
        _check_target(jid, all_)
        with state.api() as api:
            job_set = _job_set(api, cli_name)
            if jid is not None:
                job = job_set.retry(jid)
                click.echo(f"moved {job.job_class} {job.jid} to queue {job.queue}")
                return
            moved = _bulk(f"retrying {cli_name}", lambda p: job_set.retry_all(progress=p))
        click.echo(f"moved {moved} job(s) from the {cli_name} set to their queues")

    return retry


def _delete_command(cli_name: str) -> click.Command:
    @click.command("delete")
    @click.argument("jid", required=False)
    @click.option("--all", "all_", is_flag=True, help="Every entry.")
    @click.option("--yes", is_flag=True, help="Do not ask before deleting --all.")
    @pass_state
    def delete(state: CliState, /, jid: str | None, all_: bool, yes: bool) -> None:
        """Delete the job JID (or --all, after confirmation)."""
        _check_target(jid, all_)
        with state.api() as api:
            job_set = _job_set(api, cli_name)
            if jid is not None:
                if not job_set.delete_job(jid):
                    raise NotFoundError(f"no job with jid {jid!r} in the {cli_name} set")
                click.echo(f"deleted {jid}")
                return
            if not yes:
                size = job_set.size()
                click.confirm(f"Delete all {size} job(s) in the {cli_name} set?", abort=True)
            deleted = job_set.clear()
        click.echo(f"deleted {deleted} job(s) from the {cli_name} set")

    return delete


def _kill_command(cli_name: str) -> click.Command:
    @click.command("kill")
    @click.argument("jid", required=False)
    @click.option("--all", "all_", is_flag=True, help="Every entry.")
    @pass_state
    def kill(state: CliState, /, jid: str | None, all_: bool) -> None:
        """Send the job JID (or --all) to the dead set."""
        _check_target(jid, all_)
        with state.api() as api:
            job_set = _job_set(api, cli_name)
            assert isinstance(job_set, KillableSet)
            if jid is not None:
                job_set.kill(jid)
                click.echo(f"moved {jid} to the dead set")
                return
            moved = _bulk(f"killing {cli_name}", lambda p: job_set.kill_all(progress=p))
        click.echo(f"moved {moved} job(s) from the {cli_name} set to the dead set")

    return kill


set_groups = [make_set_group(name) for name in SETS]

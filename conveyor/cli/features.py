"""``conveyor cron``, ``conveyor flags`` and ``conveyor check``."""

from __future__ import annotations

import dataclasses
import time

import click
from rich.table import Table

from conveyor.cli.common import CliState, console, echo_json, pass_state, short, when
from conveyor.cli.worker import load_app
from conveyor.features.check import check_app
from conveyor.features.cron import Cron
from conveyor.features.flags import Flags


@click.group()
def cron() -> None:
    """Cron entries: list, disable, enable, destroy, run now."""


@cron.command("list")
@click.option("-r", "--require", "spec", help="App module: write its declared entries first.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def cron_list(state: CliState, /, spec: str | None, as_json: bool) -> None:
    """Every cron entry with its schedule, state, last and next tick."""
    with state.api() as api:
        if spec:
            app = load_app(spec)
            app.configure(api.app.settings)
            Cron(app).sync()
            app.close()
        cron = Cron(api.app)
        entries = cron.entries()
        last = {e.name: cron.last_tick(e.name) for e in entries}
    now = time.time()
    if as_json:
        echo_json([{**dataclasses.asdict(e), "last_tick": last[e.name]} for e in entries])
        return
    table = Table("name", "schedule", "tz", "job", "args", "state", "last tick", "next tick")
    for e in entries:
        table.add_row(
            e.name,
            e.schedule,
            e.tz,
            e.job_class,
            short(e.args, 30),
            "enabled" if e.enabled else "disabled",
            when(last[e.name], now),
            when(e.next_tick(now), now) if e.enabled else "-",
        )
    console().print(table)


def _cron_action(verb: str) -> click.Command:
    @click.command(name=verb)
    @click.argument("entry")
    @pass_state
    def command(state: CliState, /, entry: str) -> None:
        with state.api() as api:
            runner = Cron(api.app)
            if verb == "run":
                click.echo(f"enqueued {entry} now as {runner.enqueue_now(entry)}")
                return
            getattr(runner, verb)(entry)
        click.echo(f"{entry}: {verb}d" if verb != "destroy" else f"{entry}: destroyed")

    command.help = {
        "enable": "Enable a cron entry.",
        "disable": "Disable a cron entry (kept across deploys).",
        "destroy": "Delete a cron entry (a worker whose code declares it writes it again).",
        "run": "Enqueue an entry's job once, now.",
    }[verb]
    return command


for _verb in ("enable", "disable", "destroy", "run"):
    cron.add_command(_cron_action(_verb))


@click.group()
def flags() -> None:
    """Feature flags: list, enable, disable, percentage, delete."""


@flags.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def flags_list(state: CliState, /, as_json: bool) -> None:
    """Every flag and its state."""
    with state.api() as api:
        states = Flags(api.app, cache_ttl=0).all()
    if as_json:
        echo_json([dataclasses.asdict(s) for s in states])
        return
    table = Table("flag", "state", "description", "updated")
    now = time.time()
    for s in states:
        table.add_row(s.name, s.summary, s.description, when(s.updated_at or None, now))
    console().print(table)


def _flag_switch(verb: str) -> click.Command:
    on = verb == "enable"

    @click.command(name=verb)
    @click.argument("name")
    @click.option("--description", help="What the flag gates.")
    @pass_state
    def command(state: CliState, /, name: str, description: str | None) -> None:
        with state.api() as api:
            flags = Flags(api.app)
            (flags.enable if on else flags.disable)(name, description)
        click.echo(f"{name}: {'on' if on else 'off'}")

    command.help = "Turn a flag on for everyone." if on else "Turn a flag off."
    return command


for _verb in ("enable", "disable"):
    flags.add_command(_flag_switch(_verb))


@flags.command("percentage")
@click.argument("name")
@click.argument("percentage", type=click.IntRange(0, 100))
@pass_state
def flags_percentage(state: CliState, /, name: str, percentage: int) -> None:
    """Turn a flag on for PERCENTAGE % of actors."""
    with state.api() as api:
        Flags(api.app).set_percentage(name, percentage)
    click.echo(f"{name}: {percentage}% of actors")


@flags.command("delete")
@click.argument("name")
@pass_state
def flags_delete(state: CliState, /, name: str) -> None:
    """Delete a flag (it then counts as off)."""
    with state.api() as api:
        Flags(api.app).delete(name)
    click.echo(f"{name}: deleted")


@click.command()
@click.option("-r", "--require", "spec", required=True, help="App module, e.g. myproject.jobs:app")
@click.option(
    "--strict",
    is_flag=True,
    help="Also fail every job that does not declare idempotent=True or idempotent=False.",
)
def check(spec: str, strict: bool) -> None:
    """Check job declarations (e.g. deduplication without idempotency); exit 1 on an error."""
    problems = check_app(load_app(spec), strict=strict)
    for problem in problems:
        click.echo(str(problem), err=problem.level == "error")
    errors = sum(1 for p in problems if p.level == "error")
    if errors:
        raise click.ClickException(f"{errors} error(s) in job declarations")
    click.echo(f"ok: {len(problems)} warning(s)" if problems else "ok")

"""``conveyor automation node [SETTINGS_FILE]``: run this process as an automation node (a worker
on the workflows' task queues, with the master loop and the CPU throttle).

The settings file is ``SETTINGS_FILE``, else ``--settings``, else
``$CONVEYOR_AUTOMATION_SETTINGS``, else the manual's ``/usr/local/m2/setting.json``. The global
options (``--redis-url``, ``--prefix``, ``--state-dir``) apply as to every command, so a node
and ``conveyor automation run`` given the same ones meet on the same Redis and key prefix.
"""

from __future__ import annotations

import os

import click

from conveyor.automation.settings import SETTINGS_ENV, settings_path
from conveyor.cli.common import CliState


def resolve_settings_file(*candidates: str | None) -> str:
    """The first given candidate, else ``$CONVEYOR_AUTOMATION_SETTINGS``, else the manual's
    default; a clear error when that file does not exist."""
    explicit = next((c for c in candidates if c), None)
    path, origin = settings_path(explicit)
    if not os.path.isfile(path):
        raise click.UsageError(
            f"the automation settings file {path} (from {origin}) does not exist; name it with "
            f"--settings or {SETTINGS_ENV}"
        )
    return path


@click.command("node")
@click.argument("settings_file", required=False, type=click.Path(dir_okay=False))
@click.option(
    "-s",
    "--settings",
    "settings_option",
    type=click.Path(dir_okay=False),
    help=f"The automation settings JSON file. [env {SETTINGS_ENV}; default "
    "/usr/local/m2/setting.json]",
)
@click.option("--redis", "redis_url", help="Redis URL shared by every node (else --redis-url).")
@click.option("--threads", type=click.IntRange(min=1), help="Tasks run at once (default 10).")
@click.option(
    "--term",
    type=click.FloatRange(min=0.5),
    help="Seconds of a master term (default 300); every node of a workflow must agree.",
)
@click.option("--node", "node_id", help="Node id (default hostname:pid:random).")
@click.pass_context
def node(
    ctx: click.Context,
    *,
    settings_file: str | None,
    settings_option: str | None,
    redis_url: str | None,
    threads: int | None,
    term: float | None,
    node_id: str | None,
) -> None:
    """Run an automation node until SIGTERM/SIGINT. Core worker settings (heartbeat, recovery
    intervals, ...) come from CONVEYOR_* and the global options, as for `conveyor worker`."""
    from conveyor.automation.process import serve

    state = ctx.find_root().obj
    overrides = state.overrides() if isinstance(state, CliState) else {}
    serve(
        resolve_settings_file(settings_file, settings_option),
        redis_url=redis_url,
        threads=threads,
        term=term,
        node=node_id,
        overrides=overrides,
    )

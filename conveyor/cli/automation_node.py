"""``conveyor automation node SETTINGS_FILE``: run this process as an automation node (a worker
on the workflows' task queues, with the master loop and the CPU throttle)."""

from __future__ import annotations

import click

from conveyor.automation.node import serve


@click.command("node")
@click.argument("settings_file", type=click.Path(dir_okay=False, exists=True))
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
    settings_file: str,
    redis_url: str | None,
    threads: int | None,
    term: float | None,
    node_id: str | None,
) -> None:
    """Run an automation node until SIGTERM/SIGINT. Core worker settings (heartbeat, recovery
    intervals, ...) come from CONVEYOR_* as for `conveyor worker`."""
    state = ctx.find_root().obj
    url = redis_url or getattr(state, "redis_url", None)
    serve(settings_file, redis_url=url, threads=threads, term=term, node=node_id)

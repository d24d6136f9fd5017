"""The ``conveyor`` command: a thin click CLI over the data API (:mod:`conveyor.api`).

User mistakes (bad options, bad JSON, unknown jobs, an unreachable Redis) end with one clear
line on stderr and a non-zero exit status, never a traceback.

>>> from click.testing import CliRunner
>>> CliRunner().invoke(main, ["--redis-url", "redis://localhost:6379/0", "stats"])  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import click

from conveyor import __version__
from conveyor.api import RedisError
from conveyor.cli.automation import automation
from conveyor.cli.automation_node import node as automation_node
from conveyor.cli.bulk_ops import ops_group
from conveyor.cli.common import CliState, add_store_option
from conveyor.cli.compat import compat
from conveyor.cli.features import check, cron, flags
from conveyor.cli.importing import import_group
from conveyor.cli.ops import busy, demo, enqueue, processes, redis_group, stats
from conveyor.cli.sets import queues, set_groups
from conveyor.cli.web import web
from conveyor.cli.worker import worker
from conveyor.errors import ConveyorError


class ConveyorGroup(click.Group):
    """The root group: turns Conveyor and Redis errors into one-line CLI errors."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConveyorError as exc:
            raise click.ClickException(str(exc)) from None
        except RedisError as exc:
            raise click.ClickException(
                f"Redis error: {exc}; check --redis-url / CONVEYOR_REDIS_URL and that the "
                "server is running"
            ) from None


@click.group(cls=ConveyorGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--redis-url",
    envvar="CONVEYOR_REDIS_URL",
    help=(
        "redis://, rediss://, unix:// or redis+sentinel:// URL (docs/scaling.md); unset: the "
        "embedded server. [env CONVEYOR_REDIS_URL]"
    ),
)
@click.option(
    "--prefix", envvar="CONVEYOR_KEY_PREFIX", help="Key prefix shared by an app's processes."
)
@click.option("--state-dir", envvar="CONVEYOR_STATE_DIR", help="Where the embedded Redis lives.")
@click.option(
    "--store",
    envvar="CONVEYOR_STORE",
    help="The store (Redis instance) data commands use: default or a name in stores "
    "(docs/scaling.md). [env CONVEYOR_STORE]",
)
@click.version_option(__version__, prog_name="conveyor")
@click.pass_context
def main(
    ctx: click.Context,
    redis_url: str | None,
    prefix: str | None,
    state_dir: str | None,
    store: str | None,
) -> None:
    """Conveyor: reliable background jobs on Redis, wire-compatible with Sidekiq."""
    ctx.obj = CliState(
        redis_url=redis_url or None, prefix=prefix, state_dir=state_dir, store=store or None
    )


for _command in (
    worker,
    enqueue,
    stats,
    queues,
    *set_groups,
    processes,
    busy,
    cron,
    flags,
    check,
    demo,
    redis_group,
    web,
    ops_group,
    compat,
    automation,
    import_group,
):
    add_store_option(_command)  # `conveyor stats --store b` as well as `conveyor --store b stats`
    main.add_command(_command)
automation.add_command(automation_node)  # the workflow engine's node (conveyor.automation)

__all__ = ["ConveyorGroup", "main"]

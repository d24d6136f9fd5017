"""What every CLI command shares: the global options, settings, the data API and output."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from conveyor.api import Api
from conveyor.settings import Settings


@dataclass(frozen=True)
class CliState:
    """The global options (``None`` when not given: the environment or defaults decide)."""

    redis_url: str | None = None
    prefix: str | None = None
    state_dir: str | None = None
    #: ``--store``: the store data commands show and change (``None``: the setting's).
    store: str | None = None

    def overrides(self) -> dict[str, Any]:
        """Settings overrides from the global options that were given."""
        values = {
            "redis_url": self.redis_url,
            "key_prefix": self.prefix,
            "state_dir": self.state_dir,
            "store": self.store,
        }
        return {k: v for k, v in values.items() if v is not None}

    def global_args(self) -> list[str]:
        """The global options as command-line arguments (for child processes)."""
        out: list[str] = []
        for flag, value in (
            ("--redis-url", self.redis_url),
            ("--prefix", self.prefix),
            ("--state-dir", self.state_dir),
            ("--store", self.store),
        ):
            if value is not None:
                out += [flag, value]
        return out

    def settings(self, **extra: Any) -> Settings:
        """Settings: defaults < ``CONVEYOR_*`` environment < global options < ``extra``."""
        return Settings.load(**{**self.overrides(), **extra})

    @contextmanager
    def api(self) -> Iterator[Api]:
        """A data API over these settings, closed when the block ends."""
        with Api.from_settings(self.settings()) as api:
            yield api


pass_state = click.make_pass_decorator(CliState, ensure=True)


def _choose_store(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        state = ctx.find_object(CliState) or CliState()
        ctx.obj = dataclasses.replace(state, store=value)


def add_store_option(command: click.Command) -> None:
    """Give ``command`` (and every subcommand of a group) a ``--store NAME`` option that
    chooses the store it works on, like the global ``conveyor --store NAME``.

    >>> add_store_option(stats)          # then: conveyor stats --store b    # doctest: +SKIP
    """
    if not any(p.name == "store" for p in command.params):
        command.params.append(
            click.Option(
                ["--store"],
                expose_value=False,
                callback=_choose_store,
                help="The store (Redis instance) to use: default or a name in stores.",
            )
        )
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            add_store_option(sub)


def console(*, stderr: bool = False) -> Console:
    """A rich console on stdout (or stderr); width follows the terminal or ``COLUMNS``."""
    return Console(stderr=stderr, highlight=False)


def echo_json(value: Any) -> None:
    """Print ``value`` as indented JSON (for ``--json`` output)."""
    click.echo(json.dumps(value, indent=2, sort_keys=False, default=str))


def progress_bar() -> Progress:
    """A progress bar on stderr for long work (it draws only on a terminal)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console(stderr=True),
        transient=True,
    )


def when(epoch: float | None, now: float) -> str:
    """A timestamp as ``2024-05-02 10:00:00 (3m ago)`` / ``(in 12s)``; ``-`` for none.

    >>> when(100.0, 160.0)[-8:]
    '(1m ago)'
    """
    if epoch is None:
        return "-"
    stamp = dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    delta = epoch - now
    return (
        f"{stamp} ({'in ' if delta > 0 else ''}{duration(abs(delta))}{'' if delta > 0 else ' ago'})"
    )


def duration(seconds: float) -> str:
    """``42s``, ``3m``, ``5h``, ``2d``: a short, human duration.

    >>> duration(3700)
    '1h'
    """
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:.0f}s" if seconds >= 1 else f"{seconds:.2f}s"


def short(value: Any, width: int = 60) -> str:
    """``value`` as compact JSON, cut to ``width`` characters."""
    return clip(json.dumps(value, separators=(",", ":"), default=str), width)


def clip(text: str, width: int = 60) -> str:
    """``text`` on one line, cut to ``width`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"

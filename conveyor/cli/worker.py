"""``conveyor worker``: load the application's :class:`~conveyor.App` and run jobs, in this
process or in several supervised ones."""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

import click

from conveyor import logs
from conveyor.cli.common import CliState, pass_state
from conveyor.core.affinity import pin_to_one_core, slot_from_env, steer
from conveyor.core.aio_worker import AioWorker
from conveyor.core.app import App
from conveyor.core.modes import create_worker, resolved_mode
from conveyor.core.supervisor import Supervisor
from conveyor.core.worker import Worker
from conveyor.errors import ConfigurationError
from conveyor.features import metrics
from conveyor.settings import parse_queues

log = logging.getLogger("conveyor.cli")

#: Seconds the supervisor waits past the shutdown timeout before killing a child.
STOP_GRACE = 10.0


def load_app(spec: str) -> App:
    """Import ``module[:attribute]`` and return its :class:`App` (the attribute, or the only App
    defined in the module).

    >>> load_app("myproject.jobs:app")                 # doctest: +SKIP
    <conveyor.core.app.App object at ...>
    """
    module_name, _, attr = spec.partition(":")
    if not module_name:
        raise ConfigurationError(f"-r {spec!r} names no module; write e.g. -r myproject.jobs:app")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` would: the project directory
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise ConfigurationError(
                f"cannot import app module {module_name!r} ({exc}); run from the project "
                "directory or add it to PYTHONPATH"
            ) from None
        raise ConfigurationError(f"importing {module_name!r} failed: {exc}") from None
    if attr:
        found = getattr(module, attr, None)
        if not isinstance(found, App):
            what = "missing" if found is None else f"a {type(found).__name__}"
            raise ConfigurationError(
                f"{module_name}:{attr} is {what}, not a conveyor App; name the App instance, "
                f"e.g. -r {module_name}:app"
            )
        return found
    apps = {name: value for name, value in vars(module).items() if isinstance(value, App)}
    if len(apps) != 1:
        what = (
            "no App instance" if not apps else f"several App instances ({', '.join(sorted(apps))})"
        )
        raise ConfigurationError(
            f"module {module_name!r} has {what}; name one with -r {module_name}:<attribute>"
        )
    return next(iter(apps.values()))


#: The ``conveyor worker`` options that set a setting of the same meaning, option -> setting.
#: Each is also handed to every child of ``-p N`` (:func:`child_argv`).
SETTING_OPTIONS = {
    "concurrency": "concurrency",
    "timeout": "shutdown_timeout",
    "tag": "tag",
    "mode": "worker_mode",
    "store": "store",
    "cpu_affinity": "cpu_affinity",
}


def _overrides(state: CliState, params: dict[str, Any], queues: tuple[str, ...]) -> dict[str, Any]:
    changes: dict[str, Any] = state.overrides()
    if params["redis_url"]:
        changes["redis_url"] = params["redis_url"]
    if params["prefix"] is not None:
        changes["key_prefix"] = params["prefix"]
    if queues:
        changes["queues"] = parse_queues(list(queues))
    for option, setting in SETTING_OPTIONS.items():
        if params.get(option) is not None:
            changes[setting] = params[option]
    if params["strict"]:
        changes["strict_order"] = True
    if params["log_level"]:
        changes["log_level"] = params["log_level"].upper()
    return changes


def child_argv(state: CliState, params: dict[str, Any], queues: tuple[str, ...]) -> list[str]:
    """The command each supervised child runs: this one, with ``--processes 1``, minus the
    Redis URL (it may hold a password, and every local user can read a command line in
    ``ps``); :func:`child_env` hands the URL over instead.

    >>> state = CliState(redis_url="redis://:pw@cache")
    >>> "redis://:pw@cache" in child_argv(state, params, queues)      # doctest: +SKIP
    False
    """
    public = dataclasses.replace(state, redis_url=None)
    argv = [sys.executable, "-m", "conveyor.cli", *public.global_args(), "worker"]
    argv += ["-r", params["require"]]
    for queue in queues:
        argv += ["-q", queue]
    for option in (*SETTING_OPTIONS, "prefix", "log_level"):
        if params.get(option) is not None:
            argv += [f"--{option.replace('_', '-')}", str(params[option])]
    for flag in ("strict", "burst", "metrics"):
        if params[flag]:
            argv.append(f"--{flag}")
    return [*argv, "--processes", "1", "--parent-pid", str(os.getpid())]


def process_count(value: str | int | None) -> int | None:
    """``-p N`` (N >= 1), or ``-p auto``: one process per core this process may run on.

    >>> process_count("3")
    3
    """
    if value is None or isinstance(value, int):
        return value
    if value.strip().lower() == "auto":
        return (
            len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else os.cpu_count() or 1
        )
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise click.BadParameter(f"{value!r} is not a process count; write a number >= 1 or 'auto'")
    return count


def child_env(state: CliState, params: dict[str, Any]) -> dict[str, str]:
    """The environment of each supervised child: this process's, with ``CONVEYOR_REDIS_URL``
    set to the URL this command was given. ``/proc/<pid>/environ`` is readable by the same
    user only, where ``/proc/<pid>/cmdline`` is readable by everyone.

    >>> env = child_env(CliState(redis_url="redis://:pw@cache"), {"redis_url": None})
    >>> env["CONVEYOR_REDIS_URL"]
    'redis://:pw@cache'
    """
    env = dict(os.environ)
    url = params.get("redis_url") or state.redis_url
    if url:
        env["CONVEYOR_REDIS_URL"] = url
    return env


def watch_parent(worker: Worker | AioWorker, parent_pid: int) -> None:
    """Stop ``worker`` gracefully if the supervisor that started it goes away."""

    def loop() -> None:
        while not worker.wait(1.0):
            if os.getppid() != parent_pid:
                log.warning("supervisor (pid %d) is gone; stopping", parent_pid)
                worker.stop()
                return

    threading.Thread(target=loop, name="conveyor-parent-watch", daemon=True).start()


@click.command()
@click.option("-r", "--require", required=True, help="App module, as module or module:attribute.")
@click.option("-q", "--queue", "queues", multiple=True, help="Queue as 'name' or 'name,weight'.")
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(min=1),
    help="Jobs at once per process (threads or slots).",
)
@click.option(
    "-p",
    "--processes",
    callback=lambda ctx, param, value: process_count(value),
    help="Worker processes to run, or 'auto' (one per core).",
)
@click.option(
    "--mode",
    type=click.Choice(["auto", "threads", "asyncio"]),
    help="auto (default: asyncio when every job class is async def, else threads), threads, "
    "or asyncio: async def jobs on one event loop (see the docs).",
)
@click.option(
    "--cpu-affinity",
    type=click.Choice(["auto", "none", "one"]),
    help="auto (default): a threads-mode process runs on one CPU core (its threads then never "
    "hand the GIL across cores) and moves off a core others keep busy; one: each process "
    "pinned to one core; none: the OS places them (jobs whose C code runs beside the GIL).",
)
@click.option("--strict", is_flag=True, help="Strict queue order instead of weighted.")
@click.option("--burst", is_flag=True, help="Exit once the queues are empty.")
@click.option(
    "--timeout", type=click.FloatRange(min=0, min_open=True), help="Shutdown deadline (s)."
)
@click.option("--tag", help="Tag shown with the process.")
@click.option(
    "--metrics",
    is_flag=True,
    help="Count job metrics and publish them for /metrics (conveyor.features.metrics.install).",
)
@click.option(
    "--store",
    help="Serve this store (Redis instance): default or a name in stores; fetch, retries, "
    "schedule, recovery and cron run there (docs/scaling.md).",
)
@click.option("--redis-url", help="Redis URL (overrides the global option).")
@click.option("--prefix", help="Key prefix (overrides the global option).")
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    help="Log level (default: the log_level setting, INFO).",
)
@click.option("--parent-pid", type=int, hidden=True)
@pass_state
def worker(state: CliState, /, queues: tuple[str, ...], **params: Any) -> None:
    """Run jobs of the App found in --require until stopped (TERM/INT stop, TSTP quiets).

    Example: conveyor worker -r myproject.jobs -q critical,3 -q default -c 10 -p 4 --metrics
    """
    app = load_app(params["require"])
    app.configure(app.settings.replace(**_overrides(state, params, queues)))
    logs.configure(app.settings)  # once per process: JSON or text, scrubbed (docs/logging.md)
    processes = params["processes"] or app.settings.processes
    if processes > 1:
        supervisor = Supervisor(
            child_argv(state, params, queues),
            processes,
            env=child_env(state, params),
            stop_timeout=app.settings.shutdown_timeout + STOP_GRACE,
        )
        sys.exit(supervisor.run())
    if params["metrics"] and "metrics" not in app.extensions:  # installed once, not twice
        metrics.install(app)
    core = None
    lock_dir = Path(app.settings.state_dir).expanduser() / "cpu"  # beside the embedded server
    if app.settings.cpu_affinity == "one":
        core = pin_to_one_core(lock_dir, slot_from_env())
    elif app.settings.cpu_affinity == "auto" and resolved_mode(app) == "threads":
        steering = steer(lock_dir, slot_from_env())
        core = steering.core if steering is not None else None
    runner = create_worker(app, burst=params["burst"])
    logs.bind_process(worker=runner.identity)
    if core is not None:
        log.info(
            "worker %s pinned to CPU core %d (cpu_affinity=%s)",
            runner.identity,
            core,
            app.settings.cpu_affinity,
        )
    if params["parent_pid"] is not None:
        watch_parent(runner, params["parent_pid"])
    try:
        runner.run()
    finally:
        app.close()

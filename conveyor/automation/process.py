"""The node process: ``conveyor automation node`` runs :func:`serve`.

A node is a Conveyor worker listening on every enabled workflow's task queues (batch and
real-time), with the engine installed: the master loop and the heartbeat run as periodic tasks.
Its core settings come from the same place as every command's (defaults < ``CONVEYOR_*`` <
the global ``--redis-url``, ``--prefix``, ``--state-dir``), so a node and ``conveyor automation
run`` given the same options meet on the same Redis under the same key prefix.

>>> serve("/usr/local/m2/setting.json", overrides={"redis_url": "redis://10.0.0.5:6379/0"})
...                                                                   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from conveyor.automation._interfaces import LeadershipFactory
from conveyor.automation.settings import load_automation_settings
from conveyor.automation.throttle import SampleSource


def serve(
    settings_file: str,
    *,
    redis_url: str | None = None,
    threads: int | None = None,
    term: float | None = None,
    node: str | None = None,
    cpu_source: SampleSource | None = None,
    leadership: LeadershipFactory | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> None:
    """Run one automation node until SIGTERM/SIGINT. ``overrides`` are core settings (the
    global options: ``redis_url``, ``key_prefix``, ``state_dir``); ``redis_url`` and ``threads``
    (tasks run at once) win over them."""
    from conveyor import logs
    from conveyor.automation.children import sweep_leftovers
    from conveyor.automation.engine import DEFAULT_TERM, Automation
    from conveyor.core.worker import Worker
    from conveyor.features import App
    from conveyor.settings import Settings

    auto_settings = load_automation_settings(settings_file)
    options: dict[str, Any] = dict(overrides or {})
    if redis_url:
        options["redis_url"] = redis_url
    if threads:
        options["concurrency"] = threads
    core = Settings.load(**options)
    app = App(core)
    automation = Automation(
        app,
        auto_settings,
        node=node,
        term=term or DEFAULT_TERM,
        cpu_source=cpu_source,
        leadership=leadership,
    )
    if automation.queues:
        app.configure(dataclasses.replace(core, queues=automation.queues))
    logs.configure(app.settings)
    # Step processes a crashed node left behind would run a task a second time, concurrently.
    sweep_leftovers()
    automation.install()
    worker = Worker(app, identity=automation.node)
    logs.bind_process(worker=worker.identity)
    try:
        worker.run()
    finally:
        automation.close()
        app.close()

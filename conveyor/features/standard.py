"""The application object with the standard features installed: feature-flag gating,
deduplication, concurrency limits and cron. ``from conveyor import App`` gives you this one;
``conveyor.core.app.App`` is the bare core."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from conveyor.clock import SYSTEM_CLOCK, Clock
from conveyor.core.app import App as CoreApp
from conveyor.features import concurrency, cron, dedup, flags, transitions
from conveyor.settings import Settings

Installer = Callable[[CoreApp], None]

#: In chain order: the flag gate runs before deduplication so a gated job claims no cookie;
#: a deprecated job is skipped after deduplication, so its cookie is released as for any job.
STANDARD: tuple[Installer, ...] = (
    flags.install,
    dedup.install,
    transitions.install,
    concurrency.install,
    cron.install,
)


class App(CoreApp):
    """Where jobs are declared, with the standard features installed.

    >>> app = App(Settings(redis_url="redis://localhost:6379/0"))
    >>> @app.job(idempotent=True, concurrency_limit=2)
    ... def refresh(project_id: int) -> None: ...
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        clock: Clock = SYSTEM_CLOCK,
        features: Sequence[Installer] = STANDARD,
    ) -> None:
        super().__init__(settings, clock=clock)
        for install in features:
            install(self)

"""An app with the project importer, for worker processes:

    conveyor worker -r conveyor.features.imports.project.worker:app

Settings come from ``CONVEYOR_*`` (read on first use, not at import time).
"""

from __future__ import annotations

from conveyor.clock import SYSTEM_CLOCK, Clock
from conveyor.features import App
from conveyor.features.imports.model import ImportSettings
from conveyor.features.imports.pipeline import Imports
from conveyor.features.imports.project.importer import ProjectImporter
from conveyor.settings import Settings


def build_app(
    settings: Settings | None = None,
    import_settings: ImportSettings | None = None,
    *,
    clock: Clock = SYSTEM_CLOCK,
) -> App:
    """A :class:`conveyor.App` with :class:`Imports` and the project importer registered."""
    application = App(settings, clock=clock)
    Imports(application, import_settings).register(ProjectImporter())
    return application


app = build_app()

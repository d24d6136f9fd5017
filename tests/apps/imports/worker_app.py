"""A worker process for the import crash tests: ``python tests/apps/imports/worker_app.py``.

With ``IMPORT_PAUSE=<stage>:<step>`` and ``IMPORT_PAUSE_FILE=<path>``, the job that reaches that
checkpoint (e.g. ``issues:record:1005`` or ``labels:batch:1``) writes the file and sleeps, so
the test can SIGKILL the process at a known point in the middle of the stage.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from conveyor import Settings, Worker
from conveyor.features import App
from conveyor.features.imports import Imports, ImportSettings, StageRun
from conveyor.features.imports.project import ProjectImporter
from conveyor.logs import configure


class PausingImporter(ProjectImporter):
    def checkpoint(self, run: StageRun, step: str) -> None:
        if os.environ.get("IMPORT_PAUSE") == f"{run.stage}:{step}":
            Path(os.environ["IMPORT_PAUSE_FILE"]).write_text(str(os.getpid()))
            while True:  # until SIGKILL
                time.sleep(1)


def import_settings() -> ImportSettings:
    return ImportSettings(chunk_size=int(os.environ.get("IMPORT_CHUNK", "200")))


settings = Settings.load(queues="imports", log_level="DEBUG")
app = App(settings)
Imports(app, import_settings()).register(PausingImporter(label_batch=2))

if __name__ == "__main__":
    # Every line to stderr (the test's proc-<n>.log), so the session log scan reads them all.
    configure(settings)
    Worker(app).run()

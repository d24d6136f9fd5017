"""A worker process with job metrics installed: ``python tests/apps/metrics_app.py`` with
CONVEYOR_* settings. The flush interval is an hour, so whatever reaches Redis was published
when the process stopped."""

from __future__ import annotations

from conveyor import App, Settings, Worker
from conveyor.features import metrics

app = App(Settings.load())
metrics.install(app, flush_interval=3600)


@app.job(queue="default")
def tally(n: int) -> None: ...


if __name__ == "__main__":
    Worker(app).run()

"""An app with a cron entry and a declaration mistake, for the CLI feature commands."""

from __future__ import annotations

from conveyor import App, Settings
from conveyor.features.cron import schedule
from conveyor.features.dedup import deduplicate

app = App(Settings.load())


@app.job(idempotent=True)
def refresh(x: int) -> None: ...


@app.job(deduplicate=deduplicate())
def risky(x: int) -> None: ...


schedule(app, "nightly", "0 3 * * *", refresh, args=[1], tz="Asia/Seoul")

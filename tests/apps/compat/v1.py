"""Release M: ExampleWorker takes two arguments, Doomed is deprecated (with a cron entry),
Mailer uses queue 'mailers'."""

from __future__ import annotations

from conveyor import App, Job, Settings
from conveyor.features.cron import schedule

app = App(Settings.load())


@app.job(name="ExampleWorker")
class ExampleWorker(Job):
    def perform(self, object_id: int, arg1: str) -> None: ...


@app.job(name="Doomed", deprecated=True)
class Doomed(Job):
    def perform(self, object_id: int) -> None: ...


@app.job(name="Mailer", queue="mailers")
class Mailer(Job):
    def perform(self, user_id: int, params: dict[str, str] | None = None) -> None: ...


schedule(app, "doomed-nightly", "0 3 * * *", Doomed, args=[1])

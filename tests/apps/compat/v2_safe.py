"""Release M+1 done right: a new optional argument, Doomed deleted and declared removed, the
queue rename declared (conveyor compat migrate-queue -r moves its jobs)."""

from __future__ import annotations

from conveyor import App, Job, Settings
from conveyor.features.compat.lock import declare_queue_renamed, declare_removed

app = App(Settings.load())


@app.job(name="ExampleWorker")
class ExampleWorker(Job):
    def perform(self, object_id: int, arg1: str, new_arg: str | None = None) -> None: ...


@app.job(name="Mailer", queue="mail")
class Mailer(Job):
    def perform(self, user_id: int, params: dict[str, str] | None = None) -> None: ...


declare_removed(app, "Doomed")
declare_queue_renamed(app, "mailers", "mail")

"""Release M+1 done wrong: an argument removed at once, Doomed deleted without declaring it,
the queue renamed without a migration."""

from __future__ import annotations

from conveyor import App, Job, Settings

app = App(Settings.load())


@app.job(name="ExampleWorker")
class ExampleWorker(Job):
    def perform(self, object_id: int) -> None: ...


@app.job(name="Mailer", queue="mail")
class Mailer(Job):
    def perform(self, user_id: int, params: dict[str, str] | None = None) -> None: ...

from __future__ import annotations

from conveyor import App, Settings

app = App(Settings.load())


@app.job(idempotent=True)
def refresh(x: int) -> None: ...


@app.job()
def undecided(x: int) -> None:
    """Declares nothing about idempotency: fine for `check`, an error for `check --strict`."""

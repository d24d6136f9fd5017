"""A small app whose settings come from ``CONVEYOR_*`` environment variables, as a user's would."""

from __future__ import annotations

import time

from conveyor import App

app = App()


@app.job()
def tick(n: int) -> None:
    time.sleep(0.02)


@app.job(queue="low")
def nap(seconds: float) -> None:
    time.sleep(seconds)

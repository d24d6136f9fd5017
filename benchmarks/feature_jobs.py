"""Job classes for benchmarks/features.py: the same no-op job, plain and with each feature.

``python -m benchmarks.feature_jobs`` runs one worker process (settings from ``CONVEYOR_*``).
"""

from __future__ import annotations

from conveyor import App, Job, Settings, Worker
from conveyor.features.dedup import deduplicate

VARIANTS = {
    "plain": {},
    "idempotent (until_executing)": {"idempotent": True},
    "idempotent (until_executed)": {
        "idempotent": True,
        "deduplicate": deduplicate("until_executed"),
    },
    "concurrency_limit=100 (no deferral)": {"concurrency_limit": 100},
    "concurrency_limit=5 (half the threads deferred)": {"concurrency_limit": 5},
}


def class_name(variant: str) -> str:
    return "Bench" + str(list(VARIANTS).index(variant))


def create_app(settings: Settings) -> App:
    app = App(settings)
    for variant, options in VARIANTS.items():

        class Noop(Job):
            def perform(self, index: int) -> None:
                pass

        Noop.__name__ = Noop.__qualname__ = class_name(variant)
        app.register(Noop, **options)
    return app


if __name__ == "__main__":
    Worker(create_app(Settings.load())).run(install_signals=True)

"""Job classes for benchmarks/features.py: the same no-op job, and the same job making one
``INCR`` on its own client (the I/O workload), plain and with each feature.

``python -m benchmarks.feature_jobs`` runs one worker process (settings from ``CONVEYOR_*``).
"""

from __future__ import annotations

import redis

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


def class_name(variant: str, workload: str = "noop") -> str:
    prefix = "BenchIncr" if workload == "incr" else "Bench"
    return prefix + str(list(VARIANTS).index(variant))


def create_app(settings: Settings) -> App:
    app = App(settings)
    own: list[redis.Redis] = []  # the jobs' own client, made on first use

    def client() -> redis.Redis:
        if not own:
            own.append(redis.Redis.from_url(str(settings.redis_url)))
        return own[0]

    for variant, options in VARIANTS.items():

        class Noop(Job):
            def perform(self, index: int) -> None:
                pass

        class Incr(Job):
            def perform(self, index: int) -> None:
                client().incr("bench:done")

        Noop.__name__ = Noop.__qualname__ = class_name(variant)
        Incr.__name__ = Incr.__qualname__ = class_name(variant, "incr")
        app.register(Noop, **options)
        app.register(Incr, **options)
    return app


if __name__ == "__main__":
    Worker(create_app(Settings.load())).run(install_signals=True)

"""Job classes for benchmarks/scale.py: the same no-op job, plain, deduplicated and
concurrency-limited, and a plain one the benchmark routes to store ``b``.

``python -m benchmarks.scale_jobs`` runs one worker process; its settings come from
``CONVEYOR_*`` (``CONVEYOR_STORE`` picks the store it serves, ``CONVEYOR_STORES`` and
``CONVEYOR_ROUTING_RULES`` the rest).
"""

from __future__ import annotations

from typing import Any

from conveyor import App, Job, Settings, Worker

#: Variant -> (wire class name, job options).
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "plain": ("ScalePlain", {}),
    "dedup (idempotent, until_executing)": ("ScaleDedup", {"idempotent": True}),
    "limited (concurrency_limit=100)": ("ScaleLimited", {"concurrency_limit": 100}),
}
#: A plain job the two-store runs send to store ``b`` with a routing rule.
ROUTED = "ScaleRouted"


def create_app(settings: Settings) -> App:
    app = App(settings)
    for name, options in [*VARIANTS.values(), (ROUTED, {})]:

        class Noop(Job):
            def perform(self, index: int) -> None:
                pass

        Noop.__name__ = Noop.__qualname__ = name
        app.register(Noop, **options)
    return app


if __name__ == "__main__":
    Worker(create_app(Settings.load())).run(install_signals=True)

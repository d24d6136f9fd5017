"""Features on top of the core, as middleware and services: feature flags, deduplication,
concurrency limits, cron, deprecations, metrics, declaration checks, compatibility tooling,
tracked bulk operations and the import toolkit.

``conveyor.features.App`` (the ``App`` of ``from conveyor import App``) is the core app with the
standard features installed.
"""

from conveyor.features.standard import STANDARD, App, Installer

__all__ = ["STANDARD", "App", "Installer"]

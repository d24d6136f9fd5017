"""Old module paths, kept for one release.

The package was reorganised into layers in 0.2 (docs/architecture.md). Importing a module by
its old path still works and gives the very same module object, with a ``DeprecationWarning``
naming the new path. These aliases are removed in 0.3.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType

#: Removal release of every alias below.
REMOVED_IN = "0.3"

#: Old path -> new path. A package alias covers its submodules too.
MOVED: dict[str, str] = {
    "conveyor.app": "conveyor.core.app",
    "conveyor.check": "conveyor.features.check",
    "conveyor.client": "conveyor.core.client",
    "conveyor.compat": "conveyor.features.compat.lock",
    "conveyor.compat_rules": "conveyor.features.compat.rules",
    "conveyor.concurrency": "conveyor.features.concurrency",
    "conveyor.cron": "conveyor.features.cron",
    "conveyor.dedup": "conveyor.features.dedup",
    "conveyor.demo": "conveyor.cli.demo",
    "conveyor.execution": "conveyor.core.execution",
    "conveyor.flags": "conveyor.features.flags",
    "conveyor.imports": "conveyor.features.imports",
    "conveyor.job": "conveyor.core.job",
    "conveyor.launcher": "conveyor.core.worker",
    "conveyor.maintenance": "conveyor.features.compat.maintenance",
    "conveyor.metrics": "conveyor.features.metrics",
    "conveyor.middleware": "conveyor.core.middleware",
    "conveyor.operations": "conveyor.features.operations",
    "conveyor.payload": "conveyor.core.payload",
    "conveyor.processor": "conveyor.core.processor",
    "conveyor.recovery": "conveyor.core.recovery",
    "conveyor.retry": "conveyor.core.retry",
    "conveyor.scheduler": "conveyor.core.scheduler",
    "conveyor.supervisor": "conveyor.core.supervisor",
    "conveyor.testing": "conveyor.core.testing",
    "conveyor.transitions": "conveyor.features.transitions",
    # Renamed so no two modules share a name (imports.py, jobs.py, context.py).
    "conveyor.automation.jobs": "conveyor.automation.task_job",
    "conveyor.cli.context": "conveyor.cli.common",
    "conveyor.cli.imports": "conveyor.cli.importing",
    "conveyor.features.imports.context": "conveyor.features.imports.flag",
    "conveyor.features.imports.jobs": "conveyor.features.imports.stage_jobs",
    "conveyor.features.operations.jobs": "conveyor.features.operations.operation_jobs",
    "conveyor.logs.imports": "conveyor.logs.import_log",
    "conveyor.redis.imports": "conveyor.redis.import_store",
    "conveyor.web.context": "conveyor.web.extension",
    "conveyor.web.imports": "conveyor.web.import_pages",
}


def new_path(old: str) -> str | None:
    """Where the module once imported as ``old`` lives now (``None``: it did not move).

    >>> new_path("conveyor.imports.jobs")     # moved with its package, then renamed
    'conveyor.features.imports.stage_jobs'
    """
    found = _one_step(old)
    while found is not None:
        further = _one_step(found)
        if further is None:
            return found
        found = further
    return None


def _one_step(old: str) -> str | None:
    if old in MOVED:
        return MOVED[old]
    head = old.rpartition(".")[0]
    while head:
        if head in MOVED:
            return f"{MOVED[head]}.{old[len(head) + 1 :]}"
        head = head.rpartition(".")[0]
    return None


class _Alias(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target
        self.spec: importlib.machinery.ModuleSpec | None = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warnings.warn(
            f"{spec.name} moved to {self.target}; the old path goes away in {REMOVED_IN}",
            DeprecationWarning,
            stacklevel=_caller_depth(),
        )
        module = importlib.import_module(self.target)
        self.spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # The module already ran under its new name; the import system has just set its
        # __spec__ to the alias's, so put the real one back.
        module.__spec__ = self.spec


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith("conveyor."):
            return None
        moved = new_path(fullname)
        if moved is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _Alias(moved))


def _caller_depth() -> int:
    """The stack level of the first frame outside the import machinery."""
    frame = sys._getframe(1)
    depth = 1
    while frame is not None and (
        frame.f_code.co_filename.startswith("<frozen importlib") or frame.f_globals is globals()
    ):
        frame = frame.f_back  # type: ignore[assignment]
        depth += 1
    return depth


def install() -> None:
    """Register the old paths (idempotent)."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        # First, so a submodule of a moved package is never loaded a second time, under its
        # old name, by the path finder looking in the (shared) package directory.
        sys.meta_path.insert(0, _Finder())

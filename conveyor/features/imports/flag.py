"""The ``importing`` flag (SPEC IMP-9): records are saved with it set, so application hooks can
skip work that makes no sense for imported data (notifications, counters, activity); bulk inserts
run the hooks they bypass explicitly afterwards (:class:`BulkHooks`).

Two ways to see it, as in Rails' ``importing?``: the context flag, set for the whole run of an
import job, and the ``importing`` attribute of a model that includes :class:`Importable`.

>>> def after_issue_saved(issue):
...     if is_importing(issue):
...         return                      # the importer recounts once at the end
...     notify_watchers(issue)
>>> with importing():
...     is_importing()
True
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

_importing: ContextVar[bool] = ContextVar("conveyor_importing", default=False)


@contextmanager
def importing(value: bool = True) -> Iterator[None]:
    """Set the flag for the block (each thread and task has its own)."""
    token = _importing.set(value)
    try:
        yield
    finally:
        _importing.reset(token)


def is_importing(obj: object | None = None) -> bool:
    """True inside :func:`importing`, or when ``obj`` was marked as being imported.

    >>> is_importing()
    False
    """
    if _importing.get():
        return True
    return bool(getattr(obj, "importing", False)) if obj is not None else False


class Importable:
    """Mixin for models: ``importing`` is a plain attribute (not a column), False unless the
    importer sets it on the objects it creates."""

    importing: bool = False


#: Called after a bulk insert with the table (or model) name and the primary keys inserted.
BulkHook = Callable[[str, Sequence[Any]], None]


class BulkHooks:
    """Hooks an application wants run after rows were inserted in bulk (bypassing per-row hooks).

    >>> hooks = BulkHooks()
    >>> seen = []
    >>> hooks.add("labels", lambda table, ids: seen.append((table, list(ids))))
    >>> hooks.run("labels", [1, 2])
    >>> seen
    [('labels', [1, 2])]
    """

    def __init__(self) -> None:
        self._hooks: dict[str, list[BulkHook]] = {}

    def add(self, table: str, hook: BulkHook) -> None:
        """Run ``hook`` after rows of ``table`` were inserted in bulk."""
        self._hooks.setdefault(table, []).append(hook)

    def disable(self, table: str) -> None:
        """Remove a table's hooks (a problematic hook can be turned off for imports)."""
        self._hooks.pop(table, None)

    def run(self, table: str, ids: Sequence[Any]) -> None:
        """Run the table's hooks, with the flag cleared so they do their normal work."""
        if not ids:
            return
        with importing(False):
            for hook in self._hooks.get(table, ()):
                hook(table, ids)

"""The dashboard's Imports pages (SPEC WEB-1, imports), as a :class:`~conveyor.web.WebExtension`.
Read-only.

- ``/imports``: recent imports (id, importer, mode, state, current stage, records done, failed
  and registered, created and last progress).
- ``/imports/{id}``: one import with each stage's progress and the per-record failure list
  (record id, stage, error class, message, retryable).

Read through the :class:`~conveyor.features.imports.Imports` service. Record contents and the
import's options (source paths, database URLs) are never shown; failure messages are shown
escaped (the toolkit keeps SQL parameters out of them).
"""

from __future__ import annotations

import re
import threading
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.routing import Route

from conveyor.errors import NotFoundError
from conveyor.features.imports import Failure, Imports, ImportState
from conveyor.web.extension import NavItem, WebContext, WebExtension
from conveyor.web.pages import page

if TYPE_CHECKING:
    from conveyor.core.app import App

#: Imports listed on /imports.
RECENT = 50
#: Failures shown on an import's page (the count says how many there are in all).
MAX_FAILURES = 500
_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


class ImportPages:
    """The page handlers over the app's :class:`Imports` (the one installed, or one made on
    first use with default settings, as ``conveyor import status`` does)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def service(self, app: App) -> Imports:
        # Imports() refuses a second instance per app, so creation is serialised.
        with self._lock:
            return Imports.of(app)

    def recent(self, web: WebContext, request: Request) -> tuple[str, dict[str, Any]]:
        imports = self.service(web.app).recent(RECENT)
        return "imports.html", {"imports": [import_view(s) for s in imports]}

    def detail(self, web: WebContext, request: Request) -> tuple[str, dict[str, Any]]:
        import_id = str(request.path_params["id"])
        if not _ID_RE.match(import_id):
            raise NotFoundError(f"no import {import_id!r}; `conveyor import status` lists them")
        service = self.service(web.app)
        state = service.get(import_id)
        failures = service.failures(import_id)
        return "import.html", {
            "imp": import_view(state),
            "failures": [failure_view(f) for f in failures[:MAX_FAILURES]],
            "failure_count": len(failures),
        }

    def routes(self) -> list[Route]:
        return [
            Route("/imports", page(self.recent), methods=["GET"]),
            Route("/imports/{id}", page(self.detail), methods=["GET"]),
        ]


def import_view(state: ImportState) -> dict[str, Any]:
    """What the pages show of an import: never its options (paths, database URLs)."""
    return {
        "id": state.id,
        "importer": state.importer,
        "mode": state.mode,
        "status": state.status,
        "stage": state.stage,
        "active": state.active,
        "total": state.total,
        "done": state.done,
        "failed": state.failed,
        "deferred": state.deferred,
        "percent": round(100.0 * state.done / state.total, 1) if state.total else None,
        "created_at": state.created_at or None,
        "progressed_at": state.progressed_at or None,
        "finished_at": state.finished_at,
        "error": state.error or None,
        "parent": state.parent or None,
        "stages": [
            {
                "name": s.name,
                "total": s.total,
                "done": s.done,
                "failed": s.failed,
                "advanced_at": s.advanced_at,
                "current": s.name == state.stage and state.active,
            }
            for s in state.stages
        ],
    }


def failure_view(failure: Failure) -> dict[str, Any]:
    """One failed record: its id in the source, never its content."""
    return {
        "record_id": failure.record_id,
        "stage": failure.stage,
        "error_class": failure.error_class,
        "message": failure.message,
        "retryable": failure.retryable,
        "at": failure.at,
    }


def imports_extension() -> WebExtension:
    """The Imports pages (always available: they read the app's Redis)."""
    pages = ImportPages()
    return WebExtension(name="imports", nav=(NavItem("Imports", "/imports"),), pages=pages.routes())


def extension() -> WebExtension:
    """For ``app.extensions["web"]`` / entry points."""
    return imports_extension()

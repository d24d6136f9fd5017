"""Automation's HTTP API (SPEC AUTO-7, AUTO-8) as a :class:`~conveyor.web.WebExtension`.

Routes, at the web app's root (``{keyword}`` is ``meta.keyword``, ``automation`` by default)::

    POST /{keyword}/workflows/{name}[/steps/...][/vars/...]   run (batch: 202; ?mode=realtime: 200)
    GET  /{keyword}/runs/{id}                                 one run: progress and summary
    GET  /{keyword}/runs?workflow=NAME&limit=N                recent runs, newest first
    GET  /{keyword}/nodes                                     nodes with a recent heartbeat

The workflow path is parsed from the ASGI ``raw_path`` by
:func:`~conveyor.automation.parse_workflow_path`, so values keep ``/``, ``=`` and percent
escapes (``%3B`` is a ``;`` inside a value, not a separator). Every route is behind the web app's
authentication (``Authorization: Bearer <token>``, the dashboard's token); without valid
credentials the answer is a JSON 401, never a login redirect. Runs are started with ``POST``
only: a ``GET`` that starts work could be triggered by a link or an image on another site.

Statuses: 400 malformed path or query (``{"error", "segment"}``), 401 no/wrong token, 403 the
workflow lacks ``allowApiExecution``, 404 unknown or disabled workflow (or automation off), 202
batch run accepted (``Location`` names the run), and in real-time mode 200 when the task
succeeded, 502 when it failed and 504 when it timed out (the body is the task result either way).

>>> app = create_app(conveyor_app, web_settings,                     # doctest: +SKIP
...                  extensions=[automation_extension(Automation(conveyor_app, settings))])
"""

from __future__ import annotations

import os
import re
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, quote_from_bytes

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from conveyor.automation.engine import AUTOMATION
from conveyor.automation.settings import AutomationSettings, load_automation_settings
from conveyor.automation.urls import parse_workflow_path
from conveyor.errors import (
    ConfigurationError,
    WorkflowForbidden,
    WorkflowNotFound,
    WorkflowUrlError,
)
from conveyor.web.extension import WebExtension, context_of

if TYPE_CHECKING:
    from conveyor.automation.engine import Automation
    from conveyor.core.app import App

#: Names the automation settings file for processes that do not install an engine (the web app).
SETTINGS_ENV = "CONVEYOR_AUTOMATION_SETTINGS"
MODES = ("batch", "realtime")
_RUN_ID_RE = re.compile(r"^[0-9a-f]{1,64}$")
_RUN_QUERY = frozenset({"mode"})


class EngineRef:
    """The engine a set of web handlers uses: the one given, or one built on first use (not
    installed: the dashboard runs no tasks) over the dashboard's app and ``settings``."""

    def __init__(
        self,
        automation: Automation | None = None,
        *,
        settings: AutomationSettings | None = None,
        needed_by: str = "automation_extension()",
    ) -> None:
        if automation is not None:
            settings = automation.settings
        if settings is None:
            raise ConfigurationError(f"{needed_by} needs an Automation or its settings")
        self._automation = automation
        self.settings: AutomationSettings = settings
        self._lock = threading.Lock()

    def get(self, app: App) -> Automation:
        with self._lock:
            if self._automation is None:
                from conveyor.automation.engine import Automation

                self._automation = Automation(app, self.settings)
            return self._automation


class AutomationHttp:
    """The handlers, bound to one :class:`~conveyor.automation.engine.Automation` (given, or
    built on first use over the dashboard's app and ``settings``)."""

    def __init__(
        self,
        automation: Automation | None = None,
        *,
        settings: AutomationSettings | None = None,
    ) -> None:
        self._engine = EngineRef(automation, settings=settings)
        self.settings = self._engine.settings

    @property
    def keyword(self) -> str:
        return self.settings.meta.keyword

    def service(self, request: Request) -> Automation:
        """The engine (created once, over the dashboard's app, when none was given)."""
        return self._engine.get(context_of(request).app)

    def routes(self) -> list[Route]:
        kw = self.keyword
        return [
            Route(f"/{kw}/workflows/{{rest:path}}", self.run, methods=["POST"]),
            # A path the server normalised to no name ("/workflows/." arrives as "/workflows"):
            # answered by the parser (400 naming the segment), not by a slash redirect.
            Route(f"/{kw}/workflows", self.run, methods=["POST"]),
            Route(f"/{kw}/runs", self.list_runs, methods=["GET"]),
            Route(f"/{kw}/runs/{{run_id}}", self.run_status, methods=["GET"]),
            Route(f"/{kw}/nodes", self.list_nodes, methods=["GET"]),
        ]

    async def run(self, request: Request) -> Response:
        """Start a batch run (202) or run one real-time task (200/502/504)."""
        unknown = sorted(set(request.query_params) - _RUN_QUERY)
        if unknown:
            return _bad(f"unknown query parameter(s) {', '.join(unknown)}; only 'mode'", "query")
        mode = request.query_params.get("mode", "batch").lower()
        if mode not in MODES:
            return _bad(f"mode must be 'batch' or 'realtime', got {mode!r}", "mode")
        try:
            parsed = parse_workflow_path(_raw_path(request), self.keyword, client=True)
        except WorkflowUrlError as exc:
            return _bad(str(exc), exc.segment)
        if not parsed.execute:
            return _bad(
                "execute cannot be switched off: a run is its execute tasks "
                "(switch prepare or complete instead)",
                "steps",
            )
        automation = self.service(request)
        try:
            if mode == "realtime":
                if parsed.prepare:
                    return _bad("real-time mode runs one execute task; drop prepare=true", "steps")
                task = await run_in_threadpool(
                    automation.run_task, parsed.workflow, request_vars=dict(parsed.vars)
                )
                status = 200 if task.ok else 504 if task.timed_out else 502
                return JSONResponse({"mode": "realtime", **task.as_dict()}, status)
            run = await run_in_threadpool(
                lambda: automation.start_run(
                    parsed.workflow,
                    request_vars=dict(parsed.vars),
                    prepare=parsed.prepare,
                    complete=parsed.complete,
                    source="api",
                )
            )
        except WorkflowNotFound as exc:
            return JSONResponse({"error": str(exc), "workflow": exc.workflow}, 404)
        except WorkflowForbidden as exc:
            return JSONResponse({"error": str(exc), "workflow": exc.workflow}, 403)
        except ConfigurationError as exc:
            return _bad(str(exc), "vars")
        location = f"{request.scope.get('root_path', '')}/{self.keyword}/runs/{run.id}"
        body = {"mode": "batch", "id": run.id, "location": location, "run": _run_json(run)}
        return JSONResponse(body, 202, headers={"Location": location})

    async def run_status(self, request: Request) -> Response:
        """One run: state, progress, counters and the summary; ``?tasks=true`` adds each task's
        recorded result."""
        run_id = str(request.path_params["run_id"])
        if not _RUN_ID_RE.match(run_id):
            return JSONResponse({"error": f"no run {run_id!r}; run ids are hex"}, 404)
        automation = self.service(request)
        run = await run_in_threadpool(automation.run_status, run_id)
        if run is None:
            return JSONResponse({"error": f"no run {run_id!r} (unknown or expired)"}, 404)
        body = _run_json(run)
        if request.query_params.get("tasks", "").lower() in ("1", "true", "yes"):
            results = await run_in_threadpool(automation.task_results, run_id)
            body["tasks"] = [{"index": i, **r} for i, r in sorted(results.items())]
        return JSONResponse(body)

    async def list_runs(self, request: Request) -> Response:
        """Recent runs, newest first (``workflow`` filters, ``limit`` 1 to 200, default 20)."""
        workflow = request.query_params.get("workflow") or None
        raw_limit = request.query_params.get("limit", "20")
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 200:
            return _bad(f"limit must be an integer from 1 to 200, got {raw_limit!r}", "limit")
        automation = self.service(request)
        runs = await run_in_threadpool(automation.runs, workflow, int(raw_limit))
        return JSONResponse({"runs": [_run_json(r) for r in runs]})

    async def list_nodes(self, request: Request) -> Response:
        """Nodes with a recent heartbeat: throttled or not, CPU average, workflows they master."""
        automation = self.service(request)
        nodes = await run_in_threadpool(automation.nodes)
        return JSONResponse({"nodes": [n.as_dict() for n in nodes]})


def automation_extension(
    automation: Automation | None = None, *, settings: AutomationSettings | None = None
) -> WebExtension:
    """The HTTP API over ``automation`` (or over an engine built from ``settings`` on the
    dashboard's app at the first request)."""
    http = AutomationHttp(automation, settings=settings)
    return WebExtension(
        name="automation",
        pages=http.routes(),
        api_prefixes=(f"/{http.keyword}/",),
    )


def extension() -> WebExtension:
    """For ``app.extensions["web"]`` / entry points: the API over the settings file named by
    ``CONVEYOR_AUTOMATION_SETTINGS``."""
    path = os.environ.get(SETTINGS_ENV)
    if not path:
        raise ConfigurationError(
            f"set {SETTINGS_ENV} to the automation settings file to serve the automation API"
        )
    return automation_extension(settings=load_automation_settings(path))


def discover(app: App) -> WebExtension | None:
    """The extension when ``app`` has automation configured: an engine installed on it
    (``app.extensions[AUTOMATION]``), else ``CONVEYOR_AUTOMATION_SETTINGS``; ``None``
    otherwise."""
    installed = app.extensions.get(AUTOMATION)
    if installed is not None:
        return automation_extension(installed)
    if os.environ.get(SETTINGS_ENV):
        return extension()
    return None


def _raw_path(request: Request) -> str:
    """The request path as sent (still percent-encoded), without the query or the mount
    prefix. Servers differ: some put the query into ``raw_path``; some leave it out."""
    raw = request.scope.get("raw_path")
    if not isinstance(raw, bytes):
        return quote(str(request.scope.get("path", "")), safe="/;=%")
    # Bytes outside ASCII are escaped as they are, so bytes that are not UTF-8 reach the parser
    # as escapes it refuses (400) rather than as guessed characters.
    text = quote_from_bytes(raw.split(b"?", 1)[0], safe="/;=%:@,!$'()*+~")
    root = str(request.scope.get("root_path", ""))
    if root and text.startswith(root):
        text = text[len(root) :]
    return text


def _bad(message: str, segment: str) -> JSONResponse:
    return JSONResponse({"error": message, "segment": segment}, 400)


def _run_json(run: Any) -> dict[str, Any]:
    body: dict[str, Any] = run.as_dict()
    total, ended = int(run.total), int(run.ended)
    body["progress"] = {
        "ended": ended,
        "total": total,
        "percent": round(100.0 * ended / total, 1) if total else (100.0 if run.finished else 0.0),
        "finished": bool(run.finished),
    }
    return body

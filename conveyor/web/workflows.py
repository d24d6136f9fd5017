"""The dashboard's Workflows pages (SPEC WEB-1: workflows with master, nodes and runs), as a
:class:`~conveyor.web.WebExtension`. Read-only.

- ``/workflows``: each configured workflow with its master (holder, fence, term expiry, read
  from the workflow's lease), its recent runs (state, progress, size totals, times) and the
  nodes with a recent heartbeat (host, throttled, CPU average, last seen, tasks run).
- ``/workflows/runs/{id}``: one run with each task's recorded result (index, node, ok,
  duration, error). Task variables and outputs are not shown.

Everything is read through the :class:`~conveyor.automation.engine.Automation` service (and the
lease's ``peek``); the extension joins the dashboard where the automation HTTP API does (an
engine installed on the app, or ``CONVEYOR_AUTOMATION_SETTINGS``), see :func:`discover`.

>>> create_app(app, web_settings,                                   # doctest: +SKIP
...            extensions=[workflows_extension(Automation(app, automation_settings))])
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.routing import Route

from conveyor.automation.engine import AUTOMATION
from conveyor.automation.settings import AutomationSettings, LeaderElection, Workflow
from conveyor.errors import NotFoundError
from conveyor.web.automation import SETTINGS_ENV, EngineRef
from conveyor.web.extension import NavItem, WebContext, WebExtension
from conveyor.web.pages import page

if TYPE_CHECKING:
    from conveyor.automation.engine import Automation
    from conveyor.automation.runs import NodeInfo, RunInfo
    from conveyor.core.app import App

log = logging.getLogger("conveyor.web")

#: Runs listed per workflow.
RUNS_PER_WORKFLOW = 20
_RUN_ID_RE = re.compile(r"^[0-9a-f]{1,64}$")


@dataclass(frozen=True)
class MasterView:
    """Who masters a workflow: the lease's current or last term, and the node heartbeats that
    claim it. ``error`` says why the lease could not be read (the heartbeats still count)."""

    holder: str | None
    fence: int | None
    expires_at: float | None
    live: bool
    lease: str
    #: Node ids whose heartbeat says they hold a term of the workflow (fence each).
    claimed_by: dict[str, int]
    error: str | None = None


class WorkflowPages:
    """The page handlers, bound to one engine (given, or built on first use over the
    dashboard's app and ``settings``)."""

    def __init__(
        self,
        automation: Automation | None = None,
        *,
        settings: AutomationSettings | None = None,
    ) -> None:
        self._engine = EngineRef(automation, settings=settings, needed_by="workflows_extension()")
        self.settings = self._engine.settings

    def service(self, web: WebContext) -> Automation:
        """The engine (created once, not installed, over the dashboard's app)."""
        return self._engine.get(web.app)

    def overview(self, web: WebContext, request: Request) -> tuple[str, dict[str, Any]]:
        automation = self.service(web)
        nodes = automation.nodes()
        now = web.api.now()
        workflows = [
            {
                "name": wf.name,
                "enabled": bool(self.settings.meta.enable and wf.enable),
                "api": wf.allow_api_execution,
                "schedule": wf.steps.prepare.schedule if wf.steps.prepare is not None else None,
                "master": master_of(automation, wf, nodes, now),
                "rejected": automation.rejected_writes(wf.name),
                "runs": [run_view(r) for r in automation.runs(wf.name, RUNS_PER_WORKFLOW)],
            }
            for wf in self.settings.workflows
        ]
        return "workflows.html", {
            "workflows": workflows,
            "nodes": nodes,
            "automation_enabled": self.settings.meta.enable,
        }

    def run(self, web: WebContext, request: Request) -> tuple[str, dict[str, Any]]:
        run_id = str(request.path_params["run_id"])
        automation = self.service(web)
        found = automation.run_status(run_id) if _RUN_ID_RE.match(run_id) else None
        if found is None:
            raise NotFoundError(f"no run {run_id!r} (unknown or expired)")
        results = automation.task_results(run_id)
        tasks = [task_view(index, results[index]) for index in sorted(results)]
        return "workflow_run.html", {"run": run_view(found), "tasks": tasks}

    def routes(self) -> list[Route]:
        return [
            Route("/workflows", page(self.overview), methods=["GET"]),
            Route("/workflows/runs/{run_id}", page(self.run), methods=["GET"]),
        ]


def master_of(
    automation: Automation, workflow: Workflow, nodes: list[NodeInfo], now: float
) -> MasterView:
    """The workflow's master: the lease's term (``peek``, a read) and the heartbeats' claims."""
    claimed = {n.id: n.masters[workflow.name] for n in nodes if workflow.name in n.masters}
    prepare = workflow.steps.prepare
    election = prepare.leader_election if prepare is not None else LeaderElection()
    description: str = election.type
    try:
        from conveyor.automation.lease import open_lease

        lease = open_lease(
            election,
            workflow.name,
            store=automation.app.store,
            clock=automation.clock,
            state_dir=automation.app.settings.state_dir,
        )
        description = lease.description
        term = lease.peek()
    except Exception as exc:  # any backend (file, S3, Redis) may be unreachable from here
        log.warning("web: lease of workflow %s unreadable: %s", workflow.name, exc)
        return MasterView(None, None, None, False, description, claimed, error=str(exc))
    if term is None:
        return MasterView(None, None, None, False, description, claimed)
    return MasterView(
        term.holder, term.fence, term.expires_at, term.expires_at > now, description, claimed
    )


def run_view(run: RunInfo) -> dict[str, Any]:
    """What the pages show of a run (not its request variables)."""
    total, ended = run.total, run.ended
    percent = round(100.0 * ended / total, 1) if total else (100.0 if run.finished else 0.0)
    return {
        "id": run.id,
        "workflow": run.workflow,
        "state": run.state,
        "finished": run.finished,
        "total": total,
        "ended": ended,
        "succeeded": run.succeeded,
        "failed": run.failed,
        "running": run.running,
        "percent": percent,
        "src_size_total": run.src_size_total,
        "dest_size_total": run.dest_size_total,
        "master": run.master,
        "fence": run.fence,
        "source": run.source,
        "steps": [
            name
            for name, on in (
                ("prepare", run.prepare),
                ("execute", run.execute),
                ("complete", run.complete),
            )
            if on
        ],
        "adoptions": run.adoptions,
        "created_at": run.created_at or None,
        "finished_at": run.finished_at,
        "error": run.error,
    }


def task_view(index: int, result: dict[str, Any]) -> dict[str, Any]:
    """One recorded task result: index, node, ok, duration, error (no variables, no output)."""
    duration = result.get("duration")
    return {
        "index": index,
        "node": str(result.get("node") or ""),
        "ok": bool(result.get("ok")),
        "timed_out": bool(result.get("timed_out")),
        "duration": float(duration) if isinstance(duration, int | float) else None,
        "error": result.get("error") or None,
    }


def workflows_extension(
    automation: Automation | None = None, *, settings: AutomationSettings | None = None
) -> WebExtension:
    """The Workflows pages over ``automation`` (or an engine built from ``settings``)."""
    pages = WorkflowPages(automation, settings=settings)
    return WebExtension(
        name="workflows", nav=(NavItem("Workflows", "/workflows"),), pages=pages.routes()
    )


def discover(app: App) -> WebExtension | None:
    """The extension when ``app`` has automation configured (as
    :func:`conveyor.web.automation.discover` decides), else ``None``: no nav entry then."""
    installed = app.extensions.get(AUTOMATION)
    if installed is not None:
        return workflows_extension(installed)
    path = os.environ.get(SETTINGS_ENV)
    if path:
        from conveyor.automation.settings import load_automation_settings

        return workflows_extension(settings=load_automation_settings(path))
    return None

"""Server-rendered pages over the same functions as the JSON API (:mod:`conveyor.web.data`).

Forms post to the API's action routes with the CSRF token and a ``next`` field; the action
redirects back with a flash message. A small script (``static/app.js``) refreshes counters
from the JSON API.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from conveyor.api import RedisError
from conveyor.errors import NotFoundError
from conveyor.web import data
from conveyor.web.charts import history_svg
from conveyor.web.extension import WebContext, context_of

#: ``(context, request) -> (template, values)``, run in a worker thread.
Page = Callable[[WebContext, Request], tuple[str, dict[str, Any]]]
HISTORY_DAYS = (7, 30, 90)


def page(build: Page) -> Callable[[Request], Any]:
    async def handle(request: Request) -> Response:
        web = context_of(request)
        try:
            template, values = await run_in_threadpool(build, web, request)
        except NotFoundError as exc:
            return web.render(request, "error.html", status_code=404, message=str(exc))
        except RedisError as exc:
            return web.render(request, "error.html", status_code=503, message=f"Redis: {exc}")
        return web.render(request, template, **values)

    handle.__name__ = getattr(build, "__name__", "page")
    return handle


def overview(web: WebContext, request: Request) -> tuple[str, dict[str, Any]]:
    try:
        days = int(request.query_params.get("days", 30))
    except ValueError:
        days = 30
    days = days if days in HISTORY_DAYS else 30
    # At the root the overview sums every store; under /stores/<name> it shows that one.
    every = web.store is None
    history = data.history(web.api, days, every_store=every)
    return "overview.html", {
        "stats": data.stats(web.api, every_store=every),
        "days": days,
        "day_choices": HISTORY_DAYS,
        "chart": history_svg(history["days"], history["processed"], history["failed"]),
        "history": history,
    }


def queues(web: WebContext, request: Request) -> tuple[str, dict[str, Any]]:
    return "queues.html", {"queues": data.queues(web.api)}


def queue(web: WebContext, request: Request) -> tuple[str, dict[str, Any]]:
    q = request.query_params
    name = request.path_params["name"]
    return "queue.html", {"queue": data.queue_jobs(web.api, name, q.get("page", 1))}


def busy(web: WebContext, request: Request) -> tuple[str, dict[str, Any]]:
    return "busy.html", {"work": data.busy(web.api), "processes": data.processes(web.api)}


def job_set(kind: str) -> Page:
    def build(web: WebContext, request: Request) -> tuple[str, dict[str, Any]]:
        listing = data.set_jobs(web.api, kind, request.query_params.get("page", 1))
        return "set.html", {"listing": listing, "set_title": data.SETS[kind][1]}

    build.__name__ = f"{kind}_page"
    return build


def set_job(kind: str) -> Page:
    def build(web: WebContext, request: Request) -> tuple[str, dict[str, Any]]:
        record = data.set_job(web.api, kind, request.path_params["jid"])
        return "job.html", {
            "job": record,
            "kind": kind,
            "set_title": data.SETS[kind][1],
            "killable": data.killable(web.api, kind),
        }

    build.__name__ = f"{kind}_job_page"
    return build


def processes(web: WebContext, request: Request) -> tuple[str, dict[str, Any]]:
    return "processes.html", {"processes": data.processes(web.api)}


def operations(web: WebContext, request: Request) -> tuple[str, dict[str, Any]]:
    return "operations.html", {"operations": data.operations(web.api)}


def operation(web: WebContext, request: Request) -> tuple[str, dict[str, Any]]:
    found = data.operation(web.api, request.path_params["id"], request.query_params.get("page", 1))
    return "operation.html", {"op": found}


def cron(web: WebContext, request: Request) -> tuple[str, dict[str, Any]]:
    return "cron.html", {"entries": data.cron(web.api)}


def flags(web: WebContext, request: Request) -> tuple[str, dict[str, Any]]:
    return "flags.html", {"flags": data.flags(web.api)}


def routes(extra: list[BaseRoute]) -> list[BaseRoute]:
    """Every page route; extensions' pages come after the built-in ones."""
    out: list[BaseRoute] = [
        Route("/", page(overview)),
        Route("/queues", page(queues)),
        Route("/queues/{name:path}", page(queue)),
        Route("/busy", page(busy)),
        Route("/processes", page(processes)),
        Route("/operations", page(operations)),
        Route("/operations/{id}", page(operation)),
        Route("/cron", page(cron)),
        Route("/flags", page(flags)),
    ]
    for kind in data.SETS:
        out.append(Route(f"/{kind}", page(job_set(kind))))
        out.append(Route(f"/{kind}/{{jid}}", page(set_job(kind))))
    return [*out, *extra]

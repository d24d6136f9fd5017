"""The JSON API under ``/api``: reads (this module) and actions (:mod:`conveyor.web.actions`).

Reads: ``/api/session``, ``/api/stats``, ``/api/history?days=N``, ``/api/queues``,
``/api/queues/{name}/jobs?page=&per_page=``, ``/api/{retries|scheduled|dead|interrupted}``
(paged) and ``/api/{set}/{jid}``, ``/api/processes``, ``/api/busy``, ``/api/cron``,
``/api/flags``. Authenticate with ``Authorization: Bearer <token>`` or a login session. With
several stores the same routes answer for one store under ``/stores/<name>/api/``, and
``/api/stats`` and ``/api/history`` at the root sum every store.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from conveyor.api import RedisError
from conveyor.errors import ConveyorError, NotFoundError
from conveyor.web import actions, csrf, data
from conveyor.web.extension import WebContext, context_of

Reader = Callable[[WebContext, Request], Any]


def reader(read: Reader) -> Callable[[Request], Any]:
    """A GET endpoint returning ``read``'s value as JSON (run in a worker thread)."""

    async def handle(request: Request) -> Response:
        web = context_of(request)
        try:
            value = await run_in_threadpool(read, web, request)
        except NotFoundError as exc:
            return JSONResponse({"error": str(exc)}, 404)
        except (ConveyorError, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, 400)
        except RedisError as exc:
            return JSONResponse({"error": f"Redis error: {exc}"}, 503)
        return JSONResponse(value)

    handle.__name__ = getattr(read, "__name__", "read")
    return handle


def _days(request: Request) -> int:
    raw = request.query_params.get("days", "7")
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"days must be a whole number 1-1825, got {raw!r}") from None


def _set_reader(kind: str) -> Reader:
    def read(web: WebContext, request: Request) -> Any:
        q = request.query_params
        return data.set_jobs(web.api, kind, q.get("page", 1), q.get("per_page", data.PER_PAGE))

    read.__name__ = f"{kind}_list"
    return read


def _set_job_reader(kind: str) -> Reader:
    def read(web: WebContext, request: Request) -> Any:
        return data.set_job(web.api, kind, request.path_params["jid"])

    read.__name__ = f"{kind}_job"
    return read


def _operation(web: WebContext, request: Request) -> Any:
    q = request.query_params
    return data.operation(
        web.api, request.path_params["id"], q.get("page", 1), q.get("per_page", data.PER_PAGE)
    )


def _queue_jobs(web: WebContext, request: Request) -> Any:
    q = request.query_params
    return data.queue_jobs(
        web.api, request.path_params["name"], q.get("page", 1), q.get("per_page", data.PER_PAGE)
    )


async def session(request: Request) -> Response:
    """Who is logged in and the CSRF token that actions from this session must send."""
    return JSONResponse({"user": request.state.user, "csrf_token": csrf.token(request.session)})


def routes(extra: list[BaseRoute]) -> list[BaseRoute]:
    """Every API route relative to ``/api``: extensions' first, then reads, then actions."""
    out: list[BaseRoute] = [
        *extra,
        Route("/session", session, methods=["GET"]),
        Route("/stats", reader(lambda web, r: data.stats(web.api, every_store=web.store is None))),
        Route(
            "/history",
            reader(lambda web, r: data.history(web.api, _days(r), every_store=web.store is None)),
        ),
        Route("/queues", reader(lambda web, r: data.queues(web.api))),
        Route("/queues/{name:path}/jobs", reader(_queue_jobs)),
        Route("/processes", reader(lambda web, r: data.processes(web.api))),
        Route("/busy", reader(lambda web, r: data.busy(web.api))),
        Route("/operations", reader(lambda web, r: data.operations(web.api))),
        Route("/operations/{id}", reader(_operation)),
        Route("/cron", reader(lambda web, r: data.cron(web.api))),
        Route("/flags", reader(lambda web, r: data.flags(web.api))),
    ]
    for kind in data.SETS:
        out.append(Route(f"/{kind}", reader(_set_reader(kind))))
        out.append(Route(f"/{kind}/{{jid}}", reader(_set_job_reader(kind))))
    return [*out, *actions.routes()]

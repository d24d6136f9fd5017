"""The dashboard's actions (every POST under ``/api``): one function per action, serving both
the JSON API and the pages' forms.

A JSON (or bodiless) request gets ``{"ok": true, "message": ..., ...}`` back; an HTML form
post gets a redirect to its ``next`` field with the message flashed on the next page. Errors:
404 for something that is not there, 400 for a bad value, with a message saying which.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from conveyor.api import KillableSet
from conveyor.errors import ConveyorError, NotFoundError
from conveyor.features.cron import Cron
from conveyor.features.flags import Flags
from conveyor.web.auth import safe_next
from conveyor.web.data import SETS, job_set
from conveyor.web.extension import WebContext, context_of

Params = dict[str, Any]
#: A message for the operator and extra fields for the JSON answer.
Result = tuple[str, dict[str, Any]]
#: ``(context, path parameters, body parameters) -> result``.
Action = Callable[[WebContext, Params, Params], Result]
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def _is_form(request: Request) -> bool:
    return request.headers.get("content-type", "").split(";")[0].strip() in FORM_TYPES


async def _params(request: Request) -> dict[str, Any]:
    if _is_form(request):
        async with request.form() as form:
            out: dict[str, Any] = {k: v for k, v in form.items() if isinstance(v, str)}
            out["jids"] = [j for j in form.getlist("jid") if isinstance(j, str)]
            return out
    body = await request.body()
    if not body:
        return {}
    try:
        data = await request.json()
    except (ValueError, RecursionError):  # nesting deeper than the parser's stack, too
        raise ConveyorError("the request body is not valid JSON (or nested too deeply)") from None
    if not isinstance(data, dict):
        raise ConveyorError("the request body must be a JSON object")
    return data


def endpoint(action: Action) -> Callable[[Request], Any]:
    """A Starlette endpoint running ``action`` in a worker thread (Redis calls block)."""

    async def handle(request: Request) -> Response:
        web = context_of(request)
        status = 200
        data: dict[str, Any] = {}
        try:
            data = await _params(request)
            message, result = await run_in_threadpool(action, web, dict(request.path_params), data)
            ok = True
        except NotFoundError as exc:
            ok, status, message, result = False, 404, str(exc), {}
        except (ConveyorError, ValueError) as exc:
            ok, status, message, result = False, 400, str(exc), {}
        if _is_form(request):
            request.session["flash"] = {"ok": ok, "message": message}
            return RedirectResponse(safe_next(request, data.get("next")), 303)
        body = {"ok": True, "message": message, **result} if ok else {"error": message}
        return JSONResponse(body, status)

    handle.__name__ = getattr(action, "__name__", "action")
    return handle


# -- queues ------------------------------------------------------------------------------------


def queue_clear(web: WebContext, path: Params, data: Params) -> Result:
    name = path["name"]
    deleted = web.api.queue(name).clear()
    return f"cleared queue {name}: {deleted} job(s) deleted", {"deleted": deleted}


def queue_delete_job(web: WebContext, path: Params, data: Params) -> Result:
    name, jid = path["name"], path["jid"]
    if not web.api.queue(name).delete_job(jid):
        raise NotFoundError(f"no job {jid!r} in queue {name!r} (it may have run already)")
    return f"deleted job {jid} from queue {name}", {"deleted": 1}


# -- sorted sets -------------------------------------------------------------------------------


def _killable(web: WebContext, kind: str) -> KillableSet:
    found = job_set(web.api, kind)
    if not isinstance(found, KillableSet):
        raise ConveyorError(f"jobs in the {kind} set cannot be killed (they are dead already)")
    return found


def set_action(kind: str, verb: str) -> Action:
    """Retry, delete or kill one entry of the ``kind`` set."""

    def act(web: WebContext, path: Params, data: Params) -> Result:
        jid = path["jid"]
        if verb == "retry":
            record = job_set(web.api, kind).retry(jid)
            return f"job {jid} enqueued on {record.queue}", {"queue": record.queue}
        if verb == "kill":
            _killable(web, kind).kill(jid)
            return f"job {jid} moved to the dead set", {}
        if not job_set(web.api, kind).delete_job(jid):
            raise NotFoundError(f"no job with jid {jid!r} in the {kind} set")
        return f"job {jid} deleted", {}

    act.__name__ = f"{kind}_{verb}"
    return act


def set_bulk(kind: str) -> Action:
    """``action`` (retry, delete or kill) on the selected ``jids``; skips ones already gone."""

    def act(web: WebContext, path: Params, data: Params) -> Result:
        verb = data.get("action")
        jids = data.get("jids") or []
        if verb not in ("retry", "delete", "kill"):
            raise ConveyorError(f"bulk action {verb!r} is unknown; use retry, delete or kill")
        if not isinstance(jids, list) or not all(isinstance(j, str) for j in jids) or not jids:
            raise ConveyorError("select at least one job (jids: a list of jid strings)")
        single = set_action(kind, verb)
        done = 0
        for jid in dict.fromkeys(jids):
            try:
                single(web, {"jid": jid}, {})
                done += 1
            except NotFoundError:
                continue
        return f"{verb}: {done} of {len(jids)} job(s)", {"done": done}

    act.__name__ = f"{kind}_bulk"
    return act


def set_all(kind: str, verb: str) -> Action:
    """Retry, delete or kill every entry of the ``kind`` set."""

    def act(web: WebContext, path: Params, data: Params) -> Result:
        if verb == "retry":
            done = job_set(web.api, kind).retry_all()
        elif verb == "kill":
            done = _killable(web, kind).kill_all()
        else:
            done = job_set(web.api, kind).clear()
        return f"{verb} all: {done} job(s)", {"done": done}

    act.__name__ = f"{kind}_{verb}_all"
    return act


# -- processes, cron, flags --------------------------------------------------------------------


def process_signal(verb: str) -> Action:
    def act(web: WebContext, path: Params, data: Params) -> Result:
        identity = path.get("identity")
        processes = web.api.processes
        if identity is None:
            count = processes.quiet_all() if verb == "quiet" else processes.stop_all()
            return f"asked {count} process(es) to {verb}", {"count": count}
        (processes.quiet if verb == "quiet" else processes.stop)(identity)
        return f"asked {identity} to {verb}", {"count": 1}

    act.__name__ = f"process_{verb}"
    return act


def cron_action(verb: str) -> Action:
    def act(web: WebContext, path: Params, data: Params) -> Result:
        name = path["name"]
        runner = Cron(web.app, web.api.store_name)
        if verb == "enqueue":
            jid = runner.enqueue_now(name)
            return f"cron {name}: enqueued now as {jid}", {"jid": jid}
        entry = runner.enable(name) if verb == "enable" else runner.disable(name)
        return f"cron {name}: {verb}d", {"enabled": entry.enabled}

    act.__name__ = f"cron_{verb}"
    return act


def flag_action(verb: str) -> Action:
    def act(web: WebContext, path: Params, data: Params) -> Result:
        name = path["name"]
        flags = Flags(web.app, cache_ttl=0)
        description = data.get("description") or None
        if verb == "delete":
            flags.delete(name)
            return f"flag {name} deleted", {}
        if verb == "percentage":
            try:
                percentage = int(data.get("percentage", ""))
            except (TypeError, ValueError):
                raise ConveyorError(
                    f"percentage must be a whole number 0-100, got {data.get('percentage')!r}"
                ) from None
            state = flags.set_percentage(name, percentage)
        elif verb == "enable":
            state = flags.enable(name, description)
        else:
            state = flags.disable(name, description)
        return f"flag {name}: {state.summary}", {"summary": state.summary}

    act.__name__ = f"flag_{verb}"
    return act


def flag_create(web: WebContext, path: Params, data: Params) -> Result:
    """Create (or overwrite) a flag named in the body: ``name``, ``state`` (enabled or
    disabled), ``description``."""
    name, state = str(data.get("name") or "").strip(), data.get("state", "disabled")
    if state not in ("enabled", "disabled"):
        raise ConveyorError(f"state must be 'enabled' or 'disabled', got {state!r}")
    verb = "enable" if state == "enabled" else "disable"
    return flag_action(verb)(web, {"name": name}, data)


def _post(path: str, action: Action) -> Route:
    return Route(path, endpoint(action), methods=["POST"])


def routes() -> list[BaseRoute]:
    """Every action route, relative to ``/api``."""
    out: list[BaseRoute] = [
        _post("/queues/{name:path}/jobs/{jid}/delete", queue_delete_job),
        _post("/queues/{name:path}/clear", queue_clear),
    ]
    for kind in SETS:
        verbs = ("retry", "delete", "kill") if kind != "dead" else ("retry", "delete")
        out.append(_post(f"/{kind}/bulk", set_bulk(kind)))
        for verb in verbs:
            out.append(_post(f"/{kind}/{verb}_all", set_all(kind, verb)))
            out.append(_post(f"/{kind}/{{jid}}/{verb}", set_action(kind, verb)))
    for verb in ("quiet", "stop"):
        out.append(_post(f"/processes/{verb}_all", process_signal(verb)))
        out.append(_post(f"/processes/{{identity:path}}/{verb}", process_signal(verb)))
    for verb in ("enable", "disable", "enqueue"):
        out.append(_post(f"/cron/{{name:path}}/{verb}", cron_action(verb)))
    out.append(_post("/flags", flag_create))
    for verb in ("enable", "disable", "percentage", "delete"):
        out.append(_post(f"/flags/{{name:path}}/{verb}", flag_action(verb)))
    return out

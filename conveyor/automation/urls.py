"""The automation URL grammar (SPEC AUTO-7) as a pure parser, and its inverse.

::

    /{keyword}/workflows/{name}[/steps/{switches}][/vars/{variables}]

    switches   = *( step "=" ( "true" | "false" ) [";"] )     step: prepare | execute | complete
    variables  = *( key "=" value [";"] )                       key: [A-Za-z_][A-Za-z0-9_]*

``vars`` comes last: everything after ``/vars/`` is variables, so a value may hold ``/`` and
``=`` literally (it ends at the next ``;``; only the first ``=`` of a pair separates). Keys and
values are percent-decoded after splitting, so ``%3B`` writes a ``;`` and ``%25`` a ``%``; a
``%`` not followed by two hex digits stays as it is. :func:`format_workflow_path` writes any
value this way, so every string survives a round trip. Pass the *raw* request path (ASGI
``raw_path``): a server that decodes ``%3B`` before splitting would cut the value there.

Prepare is off by default for client calls (``client=True``) and on for the master's own runs;
``execute`` and ``complete`` are on unless switched off.

>>> r = parse_workflow_path("/automation/workflows/migrate/steps/complete=false;"
...                         "/vars/src=/tmp/a.jpg;q=x=y")
>>> r.workflow, r.prepare, r.execute, r.complete, dict(r.vars)
('migrate', False, True, False, {'src': '/tmp/a.jpg', 'q': 'x=y'})
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

from conveyor.automation._check import NAME_RE
from conveyor.errors import WorkflowUrlError

STEPS = ("prepare", "execute", "complete")
_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: Characters a formatted value keeps literally (the seed's values show ``/`` and ``=``).
_VALUE_SAFE = "/=:@,!$'()*+~"


@dataclass(frozen=True)
class WorkflowRequest:
    """One parsed call: the workflow, which steps run, and the request variables."""

    workflow: str
    prepare: bool = False
    execute: bool = True
    complete: bool = True
    vars: Mapping[str, str] = field(default_factory=dict)

    @property
    def steps(self) -> tuple[str, ...]:
        """The steps that run, in order."""
        return tuple(s for s in STEPS if getattr(self, s))


def parse_workflow_path(
    path: str, keyword: str = "automation", *, client: bool = True
) -> WorkflowRequest:
    """Parse a raw request path; raises :class:`WorkflowUrlError` naming the bad segment.

    ``client=True`` (an HTTP caller) leaves prepare off unless ``prepare=true`` is given.
    """
    if not isinstance(path, str) or not path.startswith("/"):
        raise WorkflowUrlError(f"a workflow path must start with '/', got {path!r}", str(path))
    head, _, rest = path[1:].partition("/")
    if _decode(head, head) != keyword:
        raise WorkflowUrlError(
            f"unknown prefix segment {head!r}; workflow paths start with /{keyword}/workflows/",
            head,
        )
    head, _, rest = rest.partition("/")
    if head != "workflows":
        raise WorkflowUrlError(
            f"expected 'workflows' after /{keyword}/, got segment {head!r}", head
        )
    raw_name, _, rest = rest.partition("/")
    name = _decode(raw_name, raw_name)
    if not NAME_RE.match(name):
        raise WorkflowUrlError(
            f"bad workflow name segment {raw_name!r}: use letters, digits, '_', '.' and '-'",
            raw_name,
        )
    switches = {"prepare": not client, "execute": True, "complete": True}
    head, _, tail = rest.partition("/")
    if head == "steps":
        spec, _, rest = tail.partition("/")
        switches.update(_parse_switches(spec))
        head, _, tail = rest.partition("/")
    variables: dict[str, str] = {}
    if head == "vars":
        variables = _parse_vars(tail)
    elif head:
        raise WorkflowUrlError(
            f"unexpected segment {head!r} after the workflow name; expected 'steps' or 'vars' "
            "(and 'vars' must come last)",
            head,
        )
    if not any(switches.values()):
        raise WorkflowUrlError(
            f"the steps segment switches every step off for {name!r}; nothing would run",
            "steps",
        )
    return WorkflowRequest(workflow=name, vars=variables, **switches)


def parse_task_line(line: str, keyword: str = "automation") -> WorkflowRequest:
    """Parse one line of a prepare file: a URL (``https://host/...``), a host and path
    (``example.com/automation/...``) or a bare path. Lines are tasks: execute only."""
    text = line.strip()
    if "://" in text:
        text = text.split("://", 1)[1]
    if not text.startswith("/"):
        host, slash, rest = text.partition("/")
        if not slash:
            raise WorkflowUrlError(f"a task line needs a path, got {line.strip()!r}", host)
        text = "/" + rest
    request = parse_workflow_path(text, keyword, client=True)
    return WorkflowRequest(workflow=request.workflow, vars=request.vars, complete=False)


def format_workflow_path(
    workflow: str,
    vars: Mapping[str, object] | None = None,
    *,
    keyword: str = "automation",
    steps: Mapping[str, bool] | None = None,
) -> str:
    """The path that :func:`parse_workflow_path` reads back as ``workflow``, ``steps``, ``vars``
    (values are written with ``str()``; ``;``, ``%`` and URL-unsafe characters are escaped).

    >>> format_workflow_path("m", {"src": "/tmp/a;b.jpg"}, steps={"complete": False})
    '/automation/workflows/m/steps/complete=false;/vars/src=/tmp/a%3Bb.jpg'
    """
    if not NAME_RE.match(workflow):
        raise WorkflowUrlError(f"bad workflow name {workflow!r}", workflow)
    out = f"/{quote(keyword, safe='')}/workflows/{workflow}"
    if steps:
        for step in steps:
            if step not in STEPS:
                raise WorkflowUrlError(f"unknown step {step!r}; steps are {', '.join(STEPS)}", step)
        out += "/steps/" + "".join(f"{s}={'true' if on else 'false'};" for s, on in steps.items())
    if vars:
        pairs = []
        for key, value in vars.items():
            if not _KEY_RE.match(key):
                raise WorkflowUrlError(f"bad variable name {key!r}", key)
            pairs.append(f"{key}={quote(str(value), safe=_VALUE_SAFE)}")
        out += "/vars/" + ";".join(pairs)
    return out


def _decode(text: str, segment: str) -> str:
    try:
        return unquote(text, errors="strict")
    except UnicodeDecodeError:
        raise WorkflowUrlError(
            f"segment {segment!r} percent-encodes bytes that are not UTF-8", segment
        ) from None


def _parse_switches(spec: str) -> dict[str, bool]:
    out: dict[str, bool] = {}
    for item in spec.split(";"):
        if not item:
            continue
        raw_key, eq, raw_value = item.partition("=")
        key, value = _decode(raw_key, item), _decode(raw_value, item).lower()
        if key not in STEPS:
            raise WorkflowUrlError(
                f"unknown step {key!r} in steps segment {item!r}; steps are {', '.join(STEPS)}",
                item,
            )
        if not eq or value not in ("true", "false"):
            raise WorkflowUrlError(
                f"steps segment {item!r} must be {key}=true or {key}=false", item
            )
        if key in out:
            raise WorkflowUrlError(f"step {key!r} is switched twice, again in {item!r}", item)
        out[key] = value == "true"
    return out


def _parse_vars(spec: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in spec.split(";"):
        if not item:
            continue
        raw_key, eq, raw_value = item.partition("=")
        key = _decode(raw_key, item)
        if not eq:
            raise WorkflowUrlError(f"variable {item!r} has no '='; write key=value", item)
        if not _KEY_RE.match(key):
            raise WorkflowUrlError(
                f"bad variable name {key!r} in {item!r}: letters, digits and '_', "
                "not starting with a digit",
                item,
            )
        if key in out:
            raise WorkflowUrlError(f"variable {key!r} is given twice, again in {item!r}", item)
        out[key] = _decode(raw_value, item)
    return out

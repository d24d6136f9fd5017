"""Declaration checks (SPEC DEDUP-1): what ``conveyor check`` and :func:`assert_valid` report.

Errors: deduplication configured on a class that is not declared idempotent, reschedule_once
with until_executing (the key is gone while the job runs, so nothing is ever dropped then), an
invalid concurrency limit or feature-flag name, idempotency arguments that point past
``perform``'s parameters, ``perform`` requiring keyword-only arguments (jobs only get positional
ones). Warnings: idempotency arguments on a class that does not deduplicate, cron entries naming
a class this app does not know (fine if another service runs it).

``strict=True`` (``conveyor check --strict``) is GitLab's rule: every job must declare
``idempotent=True`` or ``idempotent=False``, so whether running it twice is safe is a decision
someone made, not a default nobody looked at. Conveyor's own jobs (bulk operations, imports,
automation) are exempt: docs/idempotency.md says how each stays safe.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from conveyor.errors import ConfigurationError
from conveyor.features.concurrency import limit_of
from conveyor.features.cron import CRON_ENTRIES
from conveyor.features.dedup import Deduplicate, policy_of
from conveyor.features.flags import check_name

if TYPE_CHECKING:
    from conveyor.core.app import App
    from conveyor.core.job import Job


@dataclass(frozen=True)
class Problem:
    level: Literal["error", "warning"]
    subject: str
    message: str

    def __str__(self) -> str:
        return f"{self.level}: {self.subject}: {self.message}"


def check_app(app: App, *, strict: bool = False) -> list[Problem]:
    """Every problem found in the app's job and cron declarations (``strict``: also jobs that
    do not declare ``idempotent=True/False``)."""
    problems: list[Problem] = []
    for job_class in sorted(set(app.registry.values()), key=lambda c: c.wire_name()):
        problems += check_job(job_class, strict=strict)
    declared = app.extensions.get(CRON_ENTRIES) or {}

    for entry in declared.values():
        if entry.job_class not in app.registry:
            problems.append(
                Problem(
                    "warning",
                    f"cron {entry.name}",
                    f"job class {entry.job_class!r} is not registered in this app; fine only if "
                    "another service (e.g. a Ruby Sidekiq) runs it",
                )
            )
    return problems


def check_job(job_class: type[Job], *, strict: bool = False) -> list[Problem]:
    """The problems of one job class (see the module's docstring)."""
    name = job_class.wire_name()
    options = job_class.conveyor_options
    out: list[Problem] = []

    def error(message: str) -> None:
        out.append(Problem("error", name, message))

    if strict and options.get("idempotent") is None and not _own(job_class):
        error(
            "declares neither idempotent=True nor idempotent=False; decide whether running it "
            "twice is safe (delivery is at least once) and declare it"
        )

    try:
        policy = policy_of(job_class)
    except ConfigurationError as exc:
        error(str(exc))
        policy = None
    idempotent = bool(options.get("idempotent"))
    if isinstance(options.get("deduplicate"), Deduplicate) and not idempotent:
        error(
            "configures deduplication but is not declared idempotent; make perform safe to run "
            "twice, prove it with conveyor.features.dedup.perform_twice in a test, then add "
            "idempotent=True (or remove deduplicate=)"
        )
    if policy and policy.strategy == "until_executing" and policy.if_deduplicated:
        error(
            "if_deduplicated='reschedule_once' needs strategy 'until_executed': with "
            "until_executing no duplicate is dropped while the job runs"
        )
    if options.get("idempotency_arguments") is not None and policy is None:
        out.append(
            Problem("warning", name, "idempotency_arguments has no effect without deduplication")
        )
    try:
        limit_of(job_class)
    except ConfigurationError as exc:
        error(str(exc))
    flag = options.get("feature_flag")
    if flag is not None:
        try:
            check_name(str(flag))
        except ConfigurationError as exc:
            error(str(exc))
    out += _check_signature(job_class, name)
    return out


def _own(job_class: type[Job]) -> bool:
    """Conveyor's own jobs (bulk operations, imports, automation)."""
    return job_class.__module__.split(".")[0] == "conveyor"


def _check_signature(job_class: type[Job], name: str) -> list[Problem]:
    out: list[Problem] = []
    try:
        params = list(inspect.signature(job_class.perform).parameters.values())[1:]
    except (TypeError, ValueError):
        return out
    if getattr(job_class, "func", None) is not None:  # function jobs: the function's own
        params = list(inspect.signature(job_class.func).parameters.values())  # type: ignore[attr-defined]
    required_kw = [p.name for p in params if p.kind is p.KEYWORD_ONLY and p.default is p.empty]
    if required_kw:
        out.append(
            Problem(
                "error",
                name,
                f"perform requires keyword-only argument(s) {', '.join(required_kw)}, but jobs "
                "receive positional arguments only; make them positional with defaults",
            )
        )
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    varargs = any(p.kind is p.VAR_POSITIONAL for p in params)
    chosen = job_class.conveyor_options.get("idempotency_arguments")
    if isinstance(chosen, list | tuple) and not varargs:
        beyond = [i for i in chosen if not isinstance(i, int) or i >= len(positional)]
        if beyond:
            out.append(
                Problem(
                    "error",
                    name,
                    f"idempotency_arguments {beyond} point past perform's {len(positional)} "
                    "positional parameter(s)",
                )
            )
    return out


def assert_valid(app: App, *, strict: bool = False) -> None:
    """Raise :class:`ConfigurationError` listing every error (for a test in your suite).

    >>> def test_job_declarations():       # doctest: +SKIP
    ...     assert_valid(app, strict=True)
    """
    errors = [p for p in check_app(app, strict=strict) if p.level == "error"]
    if errors:
        raise ConfigurationError("\n".join(str(p) for p in errors))

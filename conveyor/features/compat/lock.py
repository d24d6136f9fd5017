"""Job compatibility across deploys (SPEC COMPAT-1, COMPAT-2): a lock file recording every job
class as the last release declared it, and a check that compares the code with it.

During a rolling deploy, jobs enqueued by the previous release run on the new one and the other
way round, so a job's wire contract (its name, queue and positional arguments) may only change
in steps (docs/compat.md)::

    conveyor compat snapshot -r myapp.jobs      # at release time: write conveyor.lock.json
    conveyor compat check -r myapp.jobs         # in CI: exit 1 on an unsafe change

or from a test::

    def test_jobs_stay_compatible():
        assert_compatible(app, "conveyor.lock.json")

Removals and queue renames are declared in code, so the check (and ``conveyor compat
remove-jobs`` / ``migrate-queue`` run with ``-r``) know they are intended::

    declare_removed(app, "MyDeprecatedWorkerOne")
    declare_queue_renamed(app, "old_queue_name", "new_queue_name")
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.errors import CompatibilityError, ConfigurationError, NotFoundError
from conveyor.features.compat.maintenance import declarations, remove_jobs
from conveyor.features.compat.rules import Finding, Probe, compare
from conveyor.features.cron import CRON_ENTRIES, Cron
from conveyor.features.flags import Flags
from conveyor.features.transitions import enqueue_as_of

if TYPE_CHECKING:
    from conveyor.core.app import App
    from conveyor.core.job import Job

LOCK_VERSION = 1
DEFAULT_LOCK = "conveyor.lock.json"
#: Stands for a default value JSON cannot hold: ``{"$not_json": "datetime.date"}``.
NOT_JSON = "$not_json"


# -- declarations ---------------------------------------------------------------------------------


def declare_removed(app: App, *names: str) -> None:
    """Declare job classes deleted in this release (by wire name): ``conveyor compat check``
    accepts their removal if the previous release deprecated them, and ``conveyor compat
    remove-jobs -r APP`` removes their jobs.

    >>> declare_removed(app, "MyDeprecatedWorkerOne", "MyDeprecatedWorkerTwo")  # doctest: +SKIP
    """
    for name in names:
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"declare_removed takes wire names (strings), got {name!r}")
    declarations(app).removed.update(names)


def declare_queue_renamed(app: App, old: str, new: str) -> None:
    """Declare that queue ``old`` is renamed ``new`` in this release: ``conveyor compat
    check`` accepts jobs moving there, and ``conveyor compat migrate-queue -r APP`` moves them.

    >>> declare_queue_renamed(app, "old_queue_name", "new_queue_name")  # doctest: +SKIP
    """
    if not old or not new or old == new:
        raise ConfigurationError(
            f"declare_queue_renamed needs two different queue names, got {old!r} and {new!r}"
        )
    declarations(app).queue_renames[old] = new


# -- snapshot -------------------------------------------------------------------------------------


def parameters(job_class: type[Job]) -> list[inspect.Parameter]:
    """``perform``'s parameters without ``self`` (the function's own for function jobs)."""
    func = getattr(job_class, "func", None)
    if callable(func):
        return list(inspect.signature(func).parameters.values())
    return list(inspect.signature(job_class.perform).parameters.values())[1:]


_KINDS = {
    inspect.Parameter.POSITIONAL_ONLY: "positional",
    inspect.Parameter.POSITIONAL_OR_KEYWORD: "positional",
    inspect.Parameter.VAR_POSITIONAL: "var_positional",
    inspect.Parameter.KEYWORD_ONLY: "keyword_only",
    inspect.Parameter.VAR_KEYWORD: "var_keyword",
}


def json_default(value: Any) -> Any:
    """A default as JSON, or a marker naming its type when JSON cannot hold it.

    >>> json_default((1, None)), json_default({1, 2})
    ([1, None], {'$not_json': 'builtins.set'})
    """
    try:
        return json.loads(json.dumps(value, sort_keys=True, allow_nan=False))
    except (TypeError, ValueError):
        kind = type(value)
        return {NOT_JSON: f"{kind.__module__}.{kind.__qualname__}"}


def signature_entry(job_class: type[Job]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in parameters(job_class):
        kind = _KINDS[p.kind]
        entry: dict[str, Any] = {"name": p.name, "kind": kind}
        if kind in ("positional", "keyword_only"):
            entry["required"] = p.default is inspect.Parameter.empty
            if not entry["required"]:
                entry["default"] = json_default(p.default)
        out.append(entry)
    return out


def job_entry(job_class: type[Job]) -> dict[str, Any]:
    """What the lock records of one job class."""
    options = job_class.conveyor_options
    target = getattr(job_class, "func", job_class)
    switch = options.get("enqueue_as")
    if switch is not None and not isinstance(switch, Mapping):
        switch = {"old": getattr(switch, "old", None), "flag": getattr(switch, "flag", None)}
    return {
        "python": f"{target.__module__}.{target.__qualname__}",
        "queue": str(options.get("queue") or "default"),
        "aliases": sorted(str(a) for a in options.get("aliases", ())),
        "deprecated": bool(options.get("deprecated", False)),
        "feature_flag": options.get("feature_flag"),
        "enqueue_as": dict(switch) if switch is not None else None,
        "params": signature_entry(job_class),
    }


def snapshot(app: App) -> dict[str, Any]:
    """The lock of ``app`` as a JSON-ready dict (deterministic: see :func:`render`)."""
    jobs = {cls.wire_name(): job_entry(cls) for cls in set(app.registry.values())}
    cron = app.extensions.get(CRON_ENTRIES) or {}
    declared = declarations(app)
    return {
        "conveyor_lock": LOCK_VERSION,
        "jobs": jobs,
        "cron": {
            name: {
                "schedule": e.schedule,
                "job_class": e.job_class,
                "queue": e.queue,
                "args": e.args,
                "tz": e.tz,
            }
            for name, e in cron.items()
        },
        "removed": sorted(declared.removed),
        "queue_renames": dict(declared.queue_renames),
    }


def render(lock: Mapping[str, Any]) -> str:
    """The lock as text: sorted keys, two-space indent, a final newline."""
    return json.dumps(lock, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_lock(app: App, path: str | Path = DEFAULT_LOCK) -> dict[str, Any]:
    """Write the lock of ``app`` to ``path``; returns what was written."""
    lock = snapshot(app)
    Path(path).write_text(render(lock), encoding="utf-8")
    return lock


def read_lock(path: str | Path = DEFAULT_LOCK) -> dict[str, Any]:
    """Read a lock file, refusing what is not one."""
    file = Path(path)
    if not file.is_file():
        raise NotFoundError(
            f"no lock file at {str(file)!r}; write one with `conveyor compat snapshot -r APP "
            f"--lock {file}` when a release ships"
        )
    try:
        lock = json.loads(file.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise CompatibilityError(f"{str(file)!r} is not valid JSON ({exc})") from None
    version = lock.get("conveyor_lock") if isinstance(lock, dict) else None
    if not isinstance(lock, dict) or not isinstance(lock.get("jobs"), dict):
        raise CompatibilityError(
            f"{str(file)!r} is not a Conveyor lock file (no 'jobs' object); write it with "
            "`conveyor compat snapshot`"
        )
    if not isinstance(version, int) or version > LOCK_VERSION:
        raise CompatibilityError(
            f"{str(file)!r} has lock version {version!r}; this Conveyor reads version "
            f"{LOCK_VERSION}: upgrade Conveyor or rewrite the lock with `conveyor compat snapshot`"
        )
    lock.setdefault("cron", {})
    lock.setdefault("removed", [])
    lock.setdefault("queue_renames", {})
    return lock


# -- check ----------------------------------------------------------------------------------------


class LiveProbe:
    """Answers the check's questions from the app's Redis (read only)."""

    def __init__(self, app: App) -> None:
        self.app = app

    def remaining(self, names: Sequence[str]) -> dict[str, int]:
        report = remove_jobs(
            self.app,
            names,
            include_dead=True,
            include_working=True,
            dry_run=True,
            allow_unknown=True,  # a count, not a removal: zero is an answer here
        )
        found = dict(report.removed)
        if report.running:
            found["running now"] = report.running
        return found

    def flag_on(self, flag: str) -> bool:
        return Flags(self.app, cache_ttl=0).enabled(flag)

    def cron_entry_exists(self, name: str) -> bool:
        try:
            Cron(self.app).get(name)
        except NotFoundError:
            return False
        return True


def check(
    app: App, lock: Mapping[str, Any] | str | Path = DEFAULT_LOCK, *, probe: Probe | None = None
) -> list[Finding]:
    """Every unsafe (``error``) or noteworthy (``warning``) change of ``app`` against ``lock``
    (a path or an already-read lock). With a ``probe`` (e.g. ``LiveProbe(app)``) the check
    also looks at Redis: jobs still enqueued under a removed name, flags, cron entries.

    >>> [str(f) for f in check(app, "conveyor.lock.json")]     # doctest: +SKIP
    ['error: ExampleWorker: [argument-removed] ...']
    """
    old = read_lock(lock) if isinstance(lock, str | Path) else lock
    new = snapshot(app)
    findings = declaration_findings(app) + compare(old, new, probe)
    return sorted(findings, key=lambda f: (f.level != "error", f.subject, f.rule, f.message))


def declaration_findings(app: App) -> list[Finding]:
    """Mistakes visible in the code alone: a class declared removed that is still registered,
    an invalid ``enqueue_as``, a queue declared renamed that classes still use."""
    out: list[Finding] = []
    declared = declarations(app)
    for name in sorted(declared.removed & set(app.registry)):
        out.append(
            Finding(
                "error",
                name,
                "removed-but-registered",
                f"declared removed, but {name!r} is still answered by a registered class: "
                "`conveyor compat remove-jobs -r APP` would delete jobs that should run. Delete "
                "the class (or the alias) or the declaration.",
            )
        )
    for job_class in sorted(set(app.registry.values()), key=lambda c: c.wire_name()):
        try:
            enqueue_as_of(job_class)
        except ConfigurationError as exc:
            out.append(Finding("error", job_class.wire_name(), "enqueue-as-invalid", str(exc)))
    for old, new in sorted(declared.queue_renames.items()):
        users = sorted(
            c.wire_name()
            for c in set(app.registry.values())
            if c.conveyor_options.get("queue") == old
        )
        if users:
            out.append(
                Finding(
                    "warning",
                    f"queue {old}",
                    "queue-still-used",
                    f"declared renamed {new!r}, but {', '.join(users)} still use {old!r}; "
                    "migrate-queue would move their new jobs too.",
                )
            )
    return out


def assert_compatible(
    app: App, lock: Mapping[str, Any] | str | Path = DEFAULT_LOCK, *, probe: Probe | None = None
) -> list[Finding]:
    """Raise :class:`CompatibilityError` listing every unsafe change; returns the warnings.

    >>> def test_jobs_stay_compatible():                        # doctest: +SKIP
    ...     assert_compatible(app, "conveyor.lock.json")
    """
    findings = check(app, lock, probe=probe)
    errors = [f for f in findings if f.level == "error"]
    if errors:
        raise CompatibilityError(
            f"{len(errors)} unsafe job change(s) against the lock:\n"
            + "\n".join(str(f) for f in errors)
        )
    return findings

"""The rules of ``conveyor compat check``: how a job declaration may change between two adjacent
releases (SPEC COMPAT-1, COMPAT-2; GitLab's guide on Sidekiq compatibility across updates).

Each unsafe change is reported with the sequence of releases that makes it safe. Jobs receive
positional arguments only, so what counts is the position of each parameter, whether it has a
default, and the names the class answers to.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

Lock = Mapping[str, Any]


@dataclass(frozen=True)
class Finding:
    """One difference between the code and the lock that matters for a rolling deploy."""

    level: Literal["error", "warning"]
    #: The job's wire name, ``cron <name>`` or ``queue <name>``.
    subject: str
    #: A short rule id, e.g. ``argument-removed``.
    rule: str
    #: What changed, why it breaks, and the safe sequence of releases.
    message: str

    def __str__(self) -> str:
        return f"{self.level}: {self.subject}: [{self.rule}] {self.message}"


class Probe(Protocol):
    """What the check may ask a live Redis (:class:`conveyor.features.compat.lock.LiveProbe`)."""

    def remaining(self, names: Sequence[str]) -> dict[str, int]:
        """Place -> jobs named ``names`` still there (queues, sets, working lists)."""
        ...

    def flag_on(self, flag: str) -> bool: ...

    def cron_entry_exists(self, name: str) -> bool: ...


ACCEPT = "If you verified it is safe, accept it by updating the lock (`conveyor compat snapshot`)."

REMOVE_ARGUMENT = (
    "Deprecate it first: release M gives it a default (`{name}=None`) and stops relying on "
    "it, release M+1 stops passing it from every producer, release M+2 removes it."
)
ADD_ARGUMENT = (
    "Add it with a default first: release M adds `{name}=None` (jobs enqueued by the previous "
    "release lack it), release M+1 passes it from every producer, release M+2 may drop the "
    "default. Or carry optional values in a parameter hash (`params: dict | None = None`), "
    "which needs no extra release."
)
REMOVE_CLASS = (
    "Release M: stop enqueueing {name} and declare it deprecated=True (a no-op that still "
    "accepts its arguments). Release M+1: delete the class, call "
    "conveyor.features.compat.lock.declare_removed(app, {name!r}) and run "
    "`conveyor compat remove-jobs -r APP` during the deploy (it also destroys or disables its "
    "cron entries)."
)
RENAME_CLASS = (
    "Release M: keep answering the old name with aliases=({old!r},) and keep producers on it "
    "with enqueue_as=enqueue_as({old!r}, flag='...') (conveyor.features.transitions). "
    "Release M+1: turn the flag on once every node runs M. Release M+2: drop the alias and "
    "the flag."
)
RENAME_QUEUE = (
    "Release M: change the queue, call "
    "conveyor.features.compat.lock.declare_queue_renamed(app, {old!r}, {new!r}) and let "
    "workers listen on both queues; after the deploy run `conveyor compat migrate-queue -r APP` "
    "(again, or with --follow, until no producer pushes to {old!r}). "
    "Release M+1: stop listening on {old!r}."
)


def _err(subject: str, rule: str, message: str) -> Finding:
    return Finding("error", subject, rule, message)


def _warn(subject: str, rule: str, message: str) -> Finding:
    return Finding("warning", subject, rule, message)


def _answered(jobs: Mapping[str, Any]) -> dict[str, str]:
    """Every name answered -> the wire name of the class answering it."""
    out: dict[str, str] = {}
    for name, entry in jobs.items():
        out[name] = name
        for alias in entry.get("aliases", ()):
            out[alias] = name
    return out


def compare(old: Lock, new: Lock, probe: Probe | None) -> list[Finding]:
    """Findings of ``new`` (the code) against ``old`` (the lock of the previous release)."""
    old_jobs: Mapping[str, Any] = old["jobs"]
    new_jobs: Mapping[str, Any] = new["jobs"]
    answered = _answered(new_jobs)
    previously = _answered(old_jobs)
    out: list[Finding] = []
    for name, entry in sorted(old_jobs.items()):
        owner = answered.get(name)
        if owner is not None:
            subject = name if owner == name else f"{name} (now {owner})"
            out += compare_job(subject, entry, new_jobs[owner], new)
        else:
            out += _gone(name, entry, previously, new, probe)
    for name, entry in sorted(old_jobs.items()):
        for alias in entry.get("aliases", ()):
            if alias not in answered and alias not in old_jobs:
                out += _alias_dropped(alias, name, entry, probe)
    for name, entry in sorted(new_jobs.items()):
        fresh = name not in previously and not set(entry.get("aliases", ())) & set(previously)
        if fresh and not entry.get("feature_flag"):
            out.append(
                _warn(
                    name,
                    "new-class",
                    "new job class: nodes still on the previous release do not know it, "
                    "so jobs enqueued before they update wait (retried) until they do. If "
                    "that delay matters, gate enqueueing with feature_flag='...' and turn "
                    "the flag on after the deploy.",
                )
            )
    out += _compare_cron(old, new, probe)
    return out


def compare_job(
    subject: str, old: Mapping[str, Any], new: Mapping[str, Any], lock: Lock
) -> list[Finding]:
    out = [
        _err(subject, rule, message)
        for rule, message in compare_params(old["params"], new["params"])
    ]
    out += [
        _warn(subject, rule, message)
        for rule, message in compare_defaults(old["params"], new["params"])
    ]
    old_queue, new_queue = old["queue"], new["queue"]
    if old_queue != new_queue and lock["queue_renames"].get(old_queue) != new_queue:
        still_used = any(e["queue"] == old_queue for e in lock["jobs"].values())
        if still_used:
            out.append(
                _warn(
                    subject,
                    "queue-changed",
                    f"moved from queue {old_queue!r} to {new_queue!r}: jobs already on "
                    f"{old_queue!r} run there as long as workers listen on it (other classes "
                    "still use it).",
                )
            )
        else:
            out.append(
                _err(
                    subject,
                    "queue-renamed",
                    f"queue {old_queue!r} became {new_queue!r} and no class uses {old_queue!r} "
                    "any more, so jobs waiting there would be stranded once workers stop "
                    "listening on it. " + RENAME_QUEUE.format(old=old_queue, new=new_queue),
                )
            )
    return out


def _positional(params: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [p for p in params if p["kind"] == "positional"]


def compare_params(
    old: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]]
) -> list[tuple[str, str]]:
    """``(rule, message)`` for each unsafe change of ``perform``'s parameters."""
    before, after = _positional(old), _positional(new)
    old_names = [p["name"] for p in before]
    new_names = [p["name"] for p in after]
    absorbs = any(p["kind"] == "var_positional" for p in new)
    out: list[tuple[str, str]] = []
    for i in range(max(len(before), len(after))):
        o = before[i] if i < len(before) else None
        n = after[i] if i < len(after) else None
        if o is not None and n is not None:
            out += _same_position(i, o, n, old_names, new_names)
        elif o is not None and not absorbs and o["name"] not in new_names:
            if o["required"]:
                out.append(
                    (
                        "argument-removed",
                        f"argument {o['name']!r} (position {i + 1}) removed without a "
                        "deprecation release: jobs enqueued by the previous release still pass "
                        "it and would fail with TypeError. "
                        + REMOVE_ARGUMENT.format(name=o["name"]),
                    )
                )
        elif n is not None and n["required"] and n["name"] not in old_names:
            out.append(
                (
                    "required-argument-added",
                    f"new required argument {n['name']!r} (position {i + 1}): jobs enqueued by "
                    "the previous release lack it and would fail with TypeError. "
                    + ADD_ARGUMENT.format(name=n["name"]),
                )
            )
    if any(p["kind"] == "var_positional" for p in old) and not absorbs:
        out.append(
            (
                "varargs-removed",
                "*args removed: jobs enqueued by the previous release may pass more arguments "
                "than perform now takes. " + REMOVE_ARGUMENT.format(name="the extra arguments"),
            )
        )
    for p in new:
        was = next((q for q in old if q["name"] == p["name"]), None)
        if p["kind"] == "keyword_only" and p.get("required") and was is None:
            out.append(
                (
                    "required-argument-added",
                    f"new required keyword-only argument {p['name']!r}: jobs only receive "
                    "positional arguments, so no job can ever pass it. Make it positional "
                    "with a default.",
                )
            )
    return out


def _same_position(
    i: int,
    o: Mapping[str, Any],
    n: Mapping[str, Any],
    old_names: Sequence[str],
    new_names: Sequence[str],
) -> list[tuple[str, str]]:
    if o["name"] != n["name"]:
        if n["name"] in old_names or o["name"] in new_names:
            return [
                (
                    "argument-moved",
                    f"position {i + 1} was {o['name']!r} and is now {n['name']!r}: arguments "
                    "travel by position, so reordering parameters (or removing one before "
                    "others) hands old payloads' values to the wrong parameters. Keep the "
                    "order; deprecate trailing arguments instead (default in M, stop passing in "
                    "M+1, remove in M+2), or use a parameter hash.",
                )
            ]
        return [
            (
                "argument-renamed",
                f"argument {o['name']!r} (position {i + 1}) renamed {n['name']!r}. Arguments "
                "travel by position: if it carries the same value, it is only a new name. If "
                "the meaning changed, add a new optional argument at the end instead (release "
                "M), switch producers to it (M+1) and deprecate the old one (M+2 onwards). "
                + ACCEPT,
            )
        ]
    if not o["required"] and n["required"]:
        return [
            (
                "default-removed",
                f"argument {n['name']!r} lost its default: jobs enqueued before every producer "
                "passed it would fail with TypeError. Drop a default only once every producer "
                "has passed the argument for a whole release (the M+2 step). " + ACCEPT,
            )
        ]
    return []


def compare_defaults(
    old: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]]
) -> list[tuple[str, str]]:
    """Warnings: a default that changed, an optional argument removed (the M+2 step)."""
    out: list[tuple[str, str]] = []
    new_by_name = {p["name"]: p for p in _positional(new)}
    absorbs = any(p["kind"] == "var_positional" for p in new)
    trailing = len(_positional(new))
    for i, p in enumerate(_positional(old)):
        now = new_by_name.get(p["name"])
        if now is None and i >= trailing and not p["required"] and not absorbs:
            out.append(
                (
                    "optional-argument-removed",
                    f"optional argument {p['name']!r} removed: safe only if no producer has "
                    "passed it for a whole release (jobs passing it would fail with TypeError).",
                )
            )
        elif (
            now is not None
            and not p["required"]
            and not now["required"]
            and p.get("default") != now.get("default")
        ):
            out.append(
                (
                    "default-changed",
                    f"default of {p['name']!r} changed from {p.get('default')!r} to "
                    f"{now.get('default')!r}: queued jobs that omit it get the new value.",
                )
            )
    return out


def _rename_candidate(
    name: str, entry: Mapping[str, Any], new_jobs: Mapping[str, Any], previously: Mapping[str, str]
) -> str | None:
    """A new class that looks like ``name`` renamed: same Python path, or the only new class
    with the same parameters."""
    fresh = {n: e for n, e in new_jobs.items() if n not in previously}
    for n, e in fresh.items():
        if e["python"] == entry["python"]:
            return n
    names = [p["name"] for p in entry["params"]]
    same = [n for n, e in fresh.items() if [p["name"] for p in e["params"]] == names]
    return same[0] if len(same) == 1 else None


def _gone(
    name: str,
    entry: Mapping[str, Any],
    previously: Mapping[str, str],
    new: Lock,
    probe: Probe | None,
) -> list[Finding]:
    """A class of the previous release that nothing answers any more."""
    renamed = _rename_candidate(name, entry, new["jobs"], previously)
    if renamed is not None and name not in new["removed"]:
        return [
            _err(
                name,
                "class-renamed-without-alias",
                f"{name} seems renamed {renamed}, which does not answer {name!r}: jobs already "
                f"enqueued as {name} (or by nodes on the previous release) would be retried "
                "until they die. " + RENAME_CLASS.format(old=name),
            )
        ]
    if not entry.get("deprecated"):
        return [
            _err(
                name,
                "class-removed-without-deprecation",
                f"{name} removed without a deprecation release: nodes on the previous release "
                "still enqueue it and queued jobs would be retried until they die. "
                + REMOVE_CLASS.format(name=name),
            )
        ]
    if name not in new["removed"]:
        return [
            _err(
                name,
                "class-removed-without-remove-jobs",
                f"{name} (deprecated) removed without declaring its removal, so nothing deletes "
                "its queued, scheduled and retrying jobs or its cron entries. "
                + REMOVE_CLASS.format(name=name),
            )
        ]
    if probe is not None:
        left = probe.remaining([name])
        if left:
            where = ", ".join(f"{place} {n}" for place, n in sorted(left.items()))
            return [
                _err(
                    name,
                    "class-removed-while-enqueued",
                    f"{sum(left.values())} job(s) of {name} are still in Redis ({where}): run "
                    f"`conveyor compat remove-jobs {name}` (or -r APP) before deploying; the "
                    "deployed deprecated no-op finishes any that run meanwhile.",
                )
            ]
    return []


def _alias_dropped(
    alias: str, owner: str, entry: Mapping[str, Any], probe: Probe | None
) -> list[Finding]:
    switch = entry.get("enqueue_as") or {}
    flag = switch.get("flag") if switch.get("old") == alias else None
    step = (
        f"Drop an alias only after the flag {flag!r} has been on for a whole release"
        if flag
        else "Drop an alias only after producers have enqueued the new name for a whole release"
    )
    step += f" and no job named {alias} is left (`conveyor compat remove-jobs {alias} --dry-run`)."
    if probe is None:
        return [
            _warn(
                alias,
                "alias-dropped",
                f"{owner} no longer answers {alias!r}; not checked against Redis. {step}",
            )
        ]
    out: list[Finding] = []
    if flag and not probe.flag_on(flag):
        out.append(
            _err(
                alias,
                "alias-dropped-while-flag-off",
                f"{owner} no longer answers {alias!r} but flag {flag!r} is off, so producers "
                f"still enqueue {alias}. {step}",
            )
        )
    left = probe.remaining([alias])
    if left:
        out.append(
            _err(
                alias,
                "alias-dropped-while-enqueued",
                f"{owner} no longer answers {alias!r} but {sum(left.values())} job(s) named "
                f"{alias} are still in Redis. {step}",
            )
        )
    return out


def _compare_cron(old: Lock, new: Lock, probe: Probe | None) -> list[Finding]:
    out: list[Finding] = []
    renamed_from = {
        e["enqueue_as"]["old"]: n for n, e in new["jobs"].items() if e.get("enqueue_as")
    }
    for name, entry in sorted(old["cron"].items()):
        now = new["cron"].get(name)
        subject = f"cron {name}"
        if now is None:
            if entry["job_class"] in new["removed"]:
                continue
            if probe is not None and not probe.cron_entry_exists(name):
                continue
            out.append(
                _err(
                    subject,
                    "cron-entry-removed",
                    "declaration removed, but the entry stays in Redis and every worker keeps "
                    f"enqueueing {entry['job_class']}: run `conveyor cron destroy {name}` "
                    "during the deploy (or declare the class removed, so `conveyor compat "
                    "remove-jobs -r APP` destroys it).",
                )
            )
        elif (
            now["job_class"] != entry["job_class"]
            and renamed_from.get(entry["job_class"]) == now["job_class"]
        ):
            out.append(
                _warn(
                    subject,
                    "cron-enqueues-new-name",
                    f"now enqueues {now['job_class']} at once (cron pushes without client "
                    "middleware, so enqueue_as does not apply); nodes on the previous release "
                    f"retry it until they update. Keep schedule(..., {entry['job_class']!r}) "
                    "until the flag is on.",
                )
            )
    return out

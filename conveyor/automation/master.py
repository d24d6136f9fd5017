"""The master of each workflow (SPEC AUTO-3, AUTO-5, AUTO-9): hold the lease, create scheduled
runs, adopt unfinished runs, run prepare and complete — on this node, in threads of their own.

:meth:`Master.tick` is a periodic task of the worker process (about every ``term / 10``
seconds): for each workflow in turn it renews or acquires the lease (``Leadership.tick``) and,
while the term is safely valid (``Leadership.current``), drives the workflow's unfinished runs.
The prepare and complete steps run in daemon threads (:mod:`conveyor.automation.batch`), never
in the periodic thread, which must keep renewing the lease however long a playbook takes.

**Faults stay in their workflow.** Whatever fails for one workflow (its lease cannot be opened
or reached, Redis refuses, a bug) is recorded as that workflow's fault (:meth:`Master.faults`:
the node's heartbeat, ``automation status``, the dashboard and /metrics show it) and retried
with a backoff of 1 s doubling to 60 s; the workflows after it carry on in the same tick.

**One master per fence.** Before acting under a term the node marks the term's fence as its own
in Redis; a node that finds the fence marked by another node (two leases that are not shared,
e.g. a file lease on each machine's local disk) refuses to act and reports the conflict.

Fencing: every master write (create a scheduled run, adopt, publish the task list, claim the
complete step, finish) carries the term's fence and is refused in Redis (Lua) when a newer fence
has been seen for the workflow; :meth:`Master.still_master` is checked right before each write
too, so a master that was paused past its term (SIGSTOP, a long GC, a frozen VM) stops acting
before Redis even has to refuse it.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from croniter import croniter

from conveyor.automation._interfaces import EngineLike, LeadershipFactory, LeadershipLike
from conveyor.automation.batch import BatchSteps
from conveyor.automation.runs import RunState
from conveyor.automation.settings import Workflow
from conveyor.errors import ConveyorError

log = logging.getLogger("conveyor.automation")

#: A prepare step may run this long (the draft gives prepare no timeout field).
DEFAULT_PREPARE_TIMEOUT = 600.0
#: Backoff of a failing workflow: the first retry after this many seconds, doubling ...
BACKOFF_START = 1.0
#: ... up to this.
BACKOFF_MAX = 60.0
#: Unfinished runs are checked against the run TTL at most this often (seconds).
EXPIRE_EVERY = 5.0

__all__ = ["DEFAULT_PREPARE_TIMEOUT", "Fault", "LeadershipFactory", "LeadershipLike", "Master"]


class NotActing(ConveyorError):
    """This node holds a term but must not act under it (another node claims the same fence)."""


@dataclass
class Fault:
    """What went wrong for one workflow on this node, and when it is tried again."""

    error: str
    since: float
    attempts: int
    retry_at: float

    def as_dict(self, now: float) -> dict[str, Any]:
        return {
            "error": self.error,
            "since": self.since,
            "attempts": self.attempts,
            "retry_in": round(max(0.0, self.retry_at - now), 1),
        }


class Master:
    """Master duties of one node for every enabled workflow."""

    def __init__(self, automation: EngineLike, factory: LeadershipFactory) -> None:
        self.automation = automation
        self.factory = factory
        self.leaders: dict[str, LeadershipLike] = {}
        #: Fence of the term this node holds per workflow (for the node heartbeat).
        self.fences: dict[str, int] = {}
        self._faults: dict[str, Fault] = {}
        self._busy: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._last_tick: dict[str, float] = {}
        self._last_expire: dict[str, float] = {}
        #: Counters for status pages and tests.
        self.stats = {"prepares": 0, "publishes": 0, "completes": 0, "rejected": 0, "stood_down": 0}
        self.steps = BatchSteps(automation, self)

    # -- leadership -----------------------------------------------------------------------------
    def leader(self, workflow: Workflow) -> LeadershipLike:
        """The leadership of ``workflow`` on this node (created on first use)."""
        found = self.leaders.get(workflow.name)
        if found is None:
            found = self.leaders[workflow.name] = self.factory(workflow)
        return found

    def still_master(self, workflow: str, fence: int) -> bool:
        """Whether this node still holds the term ``fence`` of ``workflow``, safely."""
        leader = self.leaders.get(workflow)
        term = leader.current() if leader is not None else None
        if term is not None and term.fence == fence and self.fences.get(workflow) == fence:
            return True
        self.count("stood_down")
        log.warning("automation %s: no longer master (term %d); not acting", workflow, fence)
        return False

    def masters(self) -> dict[str, int]:
        """Workflow -> fence of each term this node holds and acts under now."""
        out: dict[str, int] = {}
        for name, leader in list(self.leaders.items()):
            term = leader.current()
            if term is not None and self.fences.get(name) == term.fence:
                out[name] = term.fence
        return out

    def faults(self) -> dict[str, dict[str, Any]]:
        """Workflow -> its current fault on this node (error, since, attempts, retry in)."""
        now = time.monotonic()
        with self._lock:
            return {name: fault.as_dict(now) for name, fault in self._faults.items()}

    def count(self, stat: str) -> None:
        with self._lock:
            self.stats[stat] += 1

    def rejected(self, workflow: str, what: str) -> None:
        """Redis refused a fenced write of this node (its fence is stale)."""
        self.count("rejected")
        log.warning("automation %s: Redis refused a stale master write (%s)", workflow, what)

    # -- the periodic task ----------------------------------------------------------------------
    def tick(self) -> None:
        """For each workflow, isolated from the others: expire old runs, renew or acquire the
        lease, then drive the workflow's runs while master. A failing workflow is reported and
        retried with backoff."""
        now = time.monotonic()
        for workflow in self.automation.enabled_workflows():
            with self._lock:
                fault = self._faults.get(workflow.name)
            if fault is not None and now < fault.retry_at:
                continue
            held = False
            try:
                self._expire(workflow, now)
                problem, held = self._round(workflow)
            except Exception as exc:  # any failure stays in its workflow
                problem = f"{type(exc).__name__}: {exc}"
                if not isinstance(exc, ConveyorError | OSError):
                    log.exception("automation %s: master round failed", workflow.name)
            # A master whose renewal failed keeps ticking: backing off could let its term lapse.
            self._note(workflow.name, problem, now, backoff=not held)

    def _round(self, workflow: Workflow) -> tuple[str | None, bool]:
        """One round for one workflow: a problem to report (the lease's last error) and
        whether this node acts as master."""
        leader = self.leader(workflow)
        leader.tick()
        problem: str | None = getattr(leader, "last_error", None)
        term = leader.current()
        if term is None:
            self.fences.pop(workflow.name, None)
            return problem, False
        auto = self.automation
        holder = auto.store.claim_master(workflow.name, term.fence, auto.node, auto.term)
        if holder != auto.node:
            self.fences.pop(workflow.name, None)
            raise NotActing(
                f"node {holder} is master of {workflow.name!r} with the same fence "
                f"{term.fence}: the lease is not shared between the nodes (a file lease on a "
                "local disk?); not acting. Use a shared lease (path null: the Redis lease)"
            )
        if self.fences.get(workflow.name) != term.fence:
            log.info(
                "automation %s: node %s is master (fence %d)", workflow.name, auto.node, term.fence
            )
            self.fences[workflow.name] = term.fence
        self._schedule(workflow, term.fence)
        self._drive(workflow, term.fence)
        return problem, True

    def _note(self, workflow: str, problem: str | None, now: float, *, backoff: bool) -> None:
        with self._lock:
            fault = self._faults.get(workflow)
            if problem is None:
                if fault is not None:
                    del self._faults[workflow]
                    log.info("automation %s: recovered after %d attempts", workflow, fault.attempts)
                return
            attempts = 1 if fault is None else fault.attempts + 1
            delay = min(BACKOFF_MAX, BACKOFF_START * 2 ** (attempts - 1)) if backoff else 0.0
            since = time.time() if fault is None else fault.since
            self._faults[workflow] = Fault(problem, since, attempts, now + delay)
        if fault is None or fault.error != problem:
            log.error("automation %s: %s (retrying with backoff)", workflow, problem)
        else:
            log.debug("automation %s: still failing (%d): %s", workflow, attempts, problem)

    def _expire(self, workflow: Workflow, now: float) -> None:
        """End the workflow's unfinished runs older than ``meta.runs.ttl`` (any node may)."""
        if now - self._last_expire.get(workflow.name, -EXPIRE_EVERY) < EXPIRE_EVERY:
            return
        self._last_expire[workflow.name] = now
        auto = self.automation
        ttl = auto.settings.meta.runs.ttl
        wall = auto.clock.time()
        created = auto.store.created_at(auto.store.active(workflow.name))
        for run_id, at in created.items():
            if wall - at < ttl:
                continue
            if auto.store.expire(run_id, workflow.name, now=wall, ttl=ttl) == "expired":
                log.warning(
                    "automation %s: run %s expired (unfinished after %gs)",
                    workflow.name,
                    run_id,
                    ttl,
                )

    def _schedule(self, workflow: Workflow, fence: int) -> None:
        """Create a run for the latest tick of the prepare schedule, once per tick."""
        prepare = workflow.steps.prepare
        if prepare is None or not prepare.schedule:
            return
        auto = self.automation
        now = auto.clock.time()
        start = dt.datetime.fromtimestamp(now).astimezone()
        tick = float(croniter(prepare.schedule, start).get_prev(float))
        if self._last_tick.get(workflow.name) == tick:
            return
        if not self.still_master(workflow.name, fence):
            return
        outcome = auto.store.create_run(
            auto.new_run_id(),
            workflow.name,
            request={},
            prepare=True,
            complete=True,
            source="schedule",
            now=now,
            fence=fence,
            cron_tick=tick,
            max_unfinished=auto.settings.meta.runs.max_unfinished,
        )
        if outcome == "stale":
            self.rejected(workflow.name, "create a scheduled run")
            return
        self._last_tick[workflow.name] = tick
        if outcome == "created":
            log.info("automation %s: scheduled run for tick %.0f", workflow.name, tick)
        elif outcome == "full":
            log.warning(
                "automation %s: scheduled run for tick %.0f skipped: %d runs are unfinished "
                "(meta.runs.maxUnfinished)",
                workflow.name,
                tick,
                auto.settings.meta.runs.max_unfinished,
            )

    def _drive(self, workflow: Workflow, fence: int) -> None:
        store = self.automation.store
        for run_id in store.active(workflow.name):
            raw = store.get(run_id)
            if raw is None:
                continue
            state = raw.get("state", "")
            if int(raw.get("fence") or 0) != fence:
                if not self.still_master(workflow.name, fence):
                    return
                outcome, state = store.adopt(run_id, workflow.name, fence, self.automation.node)
                if outcome == "stale":
                    self.rejected(workflow.name, f"adopt run {run_id}")
                    return
                if outcome == "missing":
                    continue
                if outcome == "adopted":
                    log.info("automation %s: adopted run %s (%s)", workflow.name, run_id, state)
            if state == RunState.PREPARING:
                self._spawn(workflow, run_id, "prepare", fence)
            elif state == RunState.COMPLETING:
                self._spawn(workflow, run_id, "complete", fence)

    def _spawn(self, workflow: Workflow, run_id: str, step: str, fence: int) -> None:
        key = (run_id, step)
        with self._lock:
            if key in self._busy:
                return
            self._busy.add(key)
        target = self.steps.prepare if step == "prepare" else self.steps.complete

        def run() -> None:
            try:
                target(workflow, run_id, fence)
            except Exception:
                log.exception("automation %s: %s of run %s failed", workflow.name, step, run_id)
            finally:
                with self._lock:
                    self._busy.discard(key)

        name = f"conveyor-automation-{step}-{run_id[:8]}"
        threading.Thread(target=run, name=name, daemon=True).start()

"""Workflow runs in Redis (SPEC AUTO-3 … AUTO-9): run records, per-task results, fences.

A run is the hash ``conveyor:automation:run:{id}`` (state, the master's ``fence``, the
``tasks_fence`` its task list was published under, counters and sizes, the summary), with the
hashes ``...:results`` (task index -> JSON result) and ``...:started`` (task index -> node).
Every master action runs in one Lua script that first compares the caller's fence with the
highest fence seen for the workflow (``conveyor:automation:fence:{workflow}``): a lower fence is
a stale master, its write is refused and counted in ``conveyor:automation:rejected:{workflow}``.

>>> runs = AutomationStore(app.store)                                  # doctest: +SKIP
>>> runs.create_run("r1", "migrate", request={}, prepare=True, complete=True, source="api",
...                 now=time.time())                                    # doctest: +SKIP
'created'
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from conveyor.redis.store import Store

#: Finished runs (and their results) are kept this long.
FINISHED_TTL = 7 * 24 * 3600
#: A node whose heartbeat is older than this is left out of :meth:`AutomationStore.nodes`.
NODE_STALE_AFTER = 30.0
#: ... and one older than this is deleted when nodes are listed.
NODE_FORGET_AFTER = 3600.0


@dataclass(frozen=True, slots=True)
class Recorded:
    """What recording one task result did, with the run's counters right after it."""

    outcome: str
    succeeded: int
    failed: int
    total: int


class AutomationStore:
    """Run records of every workflow, bound to one :class:`~conveyor.redis.store.Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.client = store.client
        self.keys = store.keys

    def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return self.store.scripts.run(name, keys, args)

    # -- creating and adopting runs ---------------------------------------------------------------
    def create_run(
        self,
        run_id: str,
        workflow: str,
        *,
        request: Mapping[str, Any],
        prepare: bool,
        complete: bool,
        source: str,
        now: float,
        fence: int | None = None,
        cron_tick: float | None = None,
        execute: bool = True,
        max_unfinished: int | None = None,
    ) -> str:
        """Create a run in state ``preparing``; returns ``created``, ``exists``, ``stale``,
        ``baseline``, ``claimed`` or ``full`` (``max_unfinished`` runs of the workflow are
        unfinished already; see ``auto_create_run.lua``)."""
        k = self.keys
        keys = [
            k.automation_run(run_id),
            k.automation_runs,
            k.automation_workflow_runs(workflow),
            k.automation_active(workflow),
            k.automation_fence(workflow),
            k.automation_rejected(workflow),
            k.automation_cron(workflow),
        ]
        args = [
            run_id,
            workflow,
            repr(now),
            json.dumps(dict(request)),
            "1" if prepare else "0",
            "1" if complete else "0",
            source,
            "" if fence is None else str(fence),
            "" if cron_tick is None else repr(cron_tick),
            "1" if execute else "0",
            "" if max_unfinished is None else str(max_unfinished),
        ]
        return str(self._run("auto_create_run", keys, args))

    def adopt(self, run_id: str, workflow: str, fence: int, master: str) -> tuple[str, str]:
        """Take charge of a run under ``fence``; returns (outcome, state)."""
        k = self.keys
        keys = [
            k.automation_run(run_id),
            k.automation_fence(workflow),
            k.automation_rejected(workflow),
        ]
        outcome, state = self._run("auto_adopt", keys, [fence, master])
        return str(outcome), str(state)

    # -- master actions ---------------------------------------------------------------------------
    def publish(
        self,
        run_id: str,
        workflow: str,
        *,
        fence: int,
        queue: str,
        payloads: Sequence[str],
        now: float,
    ) -> tuple[str, str]:
        """Publish a run's task list and enqueue ``payloads`` on ``queue`` in one step."""
        k = self.keys
        keys = [
            k.automation_run(run_id),
            k.automation_fence(workflow),
            k.automation_rejected(workflow),
            k.queues,
            k.queue(queue),
        ]
        outcome, state = self._run("auto_publish", keys, [fence, queue, repr(now), *payloads])
        return str(outcome), str(state)

    def claim_complete(self, run_id: str, workflow: str, fence: int, now: float) -> tuple[str, str]:
        """Claim the complete step of a run whose tasks have all ended."""
        k = self.keys
        keys = [
            k.automation_run(run_id),
            k.automation_fence(workflow),
            k.automation_rejected(workflow),
        ]
        outcome, state = self._run("auto_claim_complete", keys, [fence, repr(now)])
        return str(outcome), str(state)

    def finish(
        self,
        run_id: str,
        workflow: str,
        *,
        fence: int,
        state: str,
        now: float,
        summary: Mapping[str, Any],
        error: str | None = None,
        step: Mapping[str, Any] | None = None,
    ) -> tuple[str, str]:
        """End a run as ``done`` or ``failed``."""
        k = self.keys
        keys = [
            k.automation_run(run_id),
            k.automation_fence(workflow),
            k.automation_rejected(workflow),
            k.automation_active(workflow),
            k.automation_run_results(run_id),
            k.automation_run_started(run_id),
            k.automation_metrics(workflow),
        ]
        args = [
            fence,
            state,
            repr(now),
            json.dumps(dict(summary)),
            error or "",
            json.dumps(dict(step)) if step is not None else "",
            FINISHED_TTL,
        ]
        outcome, new_state = self._run("auto_finish", keys, args)
        return str(outcome), str(new_state)

    # -- task side (every node) -------------------------------------------------------------------
    def task_start(self, run_id: str, workflow: str, index: int, fence: int, node: str) -> str:
        """Whether to run task ``index``: ``run``, ``recorded``, ``missing`` or ``stale``."""
        k = self.keys
        keys = [
            k.automation_run(run_id),
            k.automation_run_started(run_id),
            k.automation_run_results(run_id),
            k.automation_rejected(workflow),
        ]
        return str(self._run("auto_task_start", keys, [index, fence, node]))

    def record(
        self,
        run_id: str,
        workflow: str,
        *,
        index: int,
        fence: int,
        ok: bool,
        src_size: int,
        dest_size: int,
        result: Mapping[str, Any],
    ) -> Recorded:
        """Record how task ``index`` ended, once per index."""
        k = self.keys
        keys = [
            k.automation_run(run_id),
            k.automation_run_results(run_id),
            k.automation_rejected(workflow),
        ]
        args = [index, fence, "1" if ok else "0", src_size, dest_size, json.dumps(dict(result))]
        outcome, succeeded, failed, total = self._run("auto_record", keys, args)
        return Recorded(str(outcome), int(succeeded), int(failed), int(total))

    def expire(self, run_id: str, workflow: str, *, now: float, ttl: float) -> str:
        """End run ``run_id`` as ``expired`` if it is unfinished and older than ``ttl`` seconds;
        returns ``expired``, ``young``, ``state`` or ``missing`` (see ``auto_expire.lua``)."""
        k = self.keys
        keys = [
            k.automation_run(run_id),
            k.automation_active(workflow),
            k.automation_run_results(run_id),
            k.automation_run_started(run_id),
            k.automation_metrics(workflow),
        ]
        error = f"expired: not finished within {ttl:g}s (meta.runs.ttl)"
        args = [run_id, repr(now), repr(now - ttl), error, FINISHED_TTL]
        return str(self._run("auto_expire", keys, args))

    def hand_back(self, queue: str, payload: str) -> None:
        """Put a task job back at the consuming end of ``queue`` (the next one fetched)."""
        pipe = self.client.pipeline(transaction=True)
        pipe.sadd(self.keys.queues, queue)
        pipe.rpush(self.keys.queue(queue), payload)
        pipe.execute()

    # -- reading ----------------------------------------------------------------------------------
    def get(self, run_id: str) -> dict[str, str] | None:
        """The run hash plus ``started`` (how many tasks were started), or ``None``."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self.keys.automation_run(run_id))
        pipe.hlen(self.keys.automation_run_started(run_id))
        raw, started = pipe.execute()
        if not raw:
            return None
        out = {str(key): str(value) for key, value in raw.items()}
        out["started"] = str(started)
        return out

    def results(self, run_id: str) -> dict[int, dict[str, Any]]:
        """Task index -> recorded result."""
        raw = self.client.hgetall(self.keys.automation_run_results(run_id))
        return {int(index): json.loads(value) for index, value in raw.items()}

    def active(self, workflow: str) -> list[str]:
        """Unfinished run ids of ``workflow``, oldest first by id order of creation."""
        return sorted(str(x) for x in self.client.smembers(self.keys.automation_active(workflow)))

    def run_ids(self, workflow: str | None = None, limit: int = 20) -> list[str]:
        """The newest run ids (of one workflow or all), newest first."""
        key = (
            self.keys.automation_workflow_runs(workflow) if workflow else self.keys.automation_runs
        )
        return [str(x) for x in self.client.zrevrange(key, 0, max(0, limit - 1))]

    def forget(self, run_ids: Sequence[str], workflow: str | None) -> None:
        """Drop ids of expired runs from the listings."""
        if not run_ids:
            return
        pipe = self.client.pipeline(transaction=False)
        pipe.zrem(self.keys.automation_runs, *run_ids)
        if workflow:
            pipe.zrem(self.keys.automation_workflow_runs(workflow), *run_ids)
        pipe.execute()

    def highest_fence(self, workflow: str) -> int:
        """The highest master fence seen for ``workflow`` (0 before any master wrote)."""
        return int(self.client.get(self.keys.automation_fence(workflow)) or 0)

    def rejected(self, workflow: str) -> int:
        """How many fenced writes were refused as stale for ``workflow``."""
        return int(self.client.get(self.keys.automation_rejected(workflow)) or 0)

    # -- masters ----------------------------------------------------------------------------------
    def claim_master(self, workflow: str, fence: int, node: str, ttl: float) -> str:
        """Mark ``fence`` of ``workflow`` as ``node``'s for ``ttl`` seconds; returns the node the
        fence belongs to (another one: two masters with one fence, see
        ``auto_master_claim.lua``)."""
        keys = [
            self.keys.automation_master(workflow, fence),
            self.keys.automation_metrics(workflow),
        ]
        return str(self._run("auto_master_claim", keys, [node, max(1, int(ttl * 1000))]))

    # -- real-time tasks ---------------------------------------------------------------------------
    def realtime_admit(
        self,
        request_id: str,
        *,
        queue: str,
        payload: str,
        capacity: int,
        now: float,
        deadline: float,
    ) -> tuple[bool, int]:
        """Push a real-time task job if fewer than ``capacity`` are in flight; returns
        (admitted, in flight)."""
        k = self.keys
        keys = [k.automation_realtime, k.queues, k.queue(queue)]
        args = [repr(now), capacity, request_id, repr(deadline), queue, payload]
        admitted, busy = self._run("auto_realtime_admit", keys, args)
        return int(admitted) == 1, int(busy)

    def realtime_reply(self, request_id: str, result: Mapping[str, Any], keep: float) -> None:
        """Answer a real-time request (a node's side) and free its slot."""
        keys = [self.keys.automation_reply(request_id), self.keys.automation_realtime]
        args = [request_id, json.dumps(dict(result)), max(1, int(keep))]
        self._run("auto_realtime_reply", keys, args)

    def realtime_wait(self, request_id: str, timeout: float) -> dict[str, Any] | None:
        """The answer to a real-time request, waiting up to ``timeout`` seconds (``None`` when
        no node answered in time: the request is then dropped from the in-flight set)."""
        key = self.keys.automation_reply(request_id)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.client.zrem(self.keys.automation_realtime, request_id)
                return None
            # Short waits: a connection is never held longer than a second at a time.
            found = self.client.blpop([key], timeout=min(1.0, max(left, 0.01)))
            if found is not None:
                self.client.delete(key)
                value = json.loads(found[1])
                return value if isinstance(value, dict) else None

    def realtime_in_flight(self, now: float) -> int:
        """Real-time requests handed to nodes whose callers still wait."""
        return int(self.client.zcount(self.keys.automation_realtime, repr(now), "+inf"))

    # -- metrics ----------------------------------------------------------------------------------
    def add_metrics(self, workflow: str, counts: Mapping[str, float]) -> None:
        """Add ``counts`` (field -> amount) to ``workflow``'s metrics hash in one step, so a
        scrape never sees a histogram's count without its buckets."""
        args: list[Any] = []
        for name, amount in counts.items():
            if isinstance(amount, int):
                args += [name, "i", amount]
            else:
                args += [name, "f", repr(float(amount))]
        if args:
            self._run("metrics_add", [self.keys.automation_metrics(workflow)], args)

    def metrics(self, workflow: str) -> dict[str, float]:
        """``workflow``'s cumulative metrics (field -> value)."""
        raw = self.client.hgetall(self.keys.automation_metrics(workflow))
        out: dict[str, float] = {}
        for name, value in raw.items():
            try:
                out[str(name)] = float(value)
            except ValueError:
                continue
        return out

    def active_states(self, workflow: str) -> dict[str, int]:
        """How many unfinished runs of ``workflow`` are in each state."""
        ids = self.active(workflow)
        if not ids:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for run_id in ids:
            pipe.hget(self.keys.automation_run(run_id), "state")
        out: dict[str, int] = {}
        for state in pipe.execute():
            if state:
                out[str(state)] = out.get(str(state), 0) + 1
        return out

    def created_at(self, run_ids: Sequence[str]) -> dict[str, float]:
        """Creation time of each run that still exists."""
        if not run_ids:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for run_id in run_ids:
            pipe.hget(self.keys.automation_run(run_id), "created_at")
        return {
            run_id: float(value)
            for run_id, value in zip(run_ids, pipe.execute(), strict=True)
            if value is not None
        }

    # -- nodes ------------------------------------------------------------------------------------
    def beat(self, node: str, info: Mapping[str, Any]) -> None:
        """Write one node heartbeat (a JSON object holding ``last_seen``)."""
        self.client.hset(self.keys.automation_nodes, node, json.dumps(dict(info)))

    def forget_node(self, node: str) -> None:
        """Remove a node's heartbeat (a node leaving gracefully)."""
        self.client.hdel(self.keys.automation_nodes, node)

    def nodes(self, now: float) -> list[dict[str, Any]]:
        """Heartbeats seen within :data:`NODE_STALE_AFTER` seconds; very old ones are deleted."""
        out: list[dict[str, Any]] = []
        old: list[str] = []
        for node, raw in self.client.hgetall(self.keys.automation_nodes).items():
            try:
                info = json.loads(raw)
                seen = float(info.get("last_seen", 0))
            except (ValueError, TypeError, AttributeError):
                old.append(str(node))
                continue
            if now - seen > NODE_FORGET_AFTER:
                old.append(str(node))
            elif now - seen <= NODE_STALE_AFTER:
                out.append(info)
        if old:
            self.client.hdel(self.keys.automation_nodes, *old)
        return sorted(out, key=lambda info: str(info.get("id", "")))

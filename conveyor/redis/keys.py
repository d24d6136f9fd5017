"""Every Redis key Conveyor touches, built in this one place.

The Sidekiq keys (``queue:*``, ``schedule``, ``retry``, ``dead``, ``processes``, ``stat:*`` and the
per-process hashes) keep Sidekiq's names so a Ruby Sidekiq can share the Redis. Keys only Conveyor
uses live under ``conveyor:`` so they can never collide with Sidekiq's.
"""

from __future__ import annotations

import re

_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


def glob_escape(text: str) -> str:
    """Escape Redis glob characters so ``text`` matches itself in SCAN/ZSCAN ``MATCH``.

    >>> glob_escape("a*b")
    'a\\\\*b'
    """
    return _GLOB_SPECIAL.sub(r"\\\1", text)


class Keys:
    """Key builder for one optional prefix (``"myapp"`` gives ``"myapp:queue:default"``)."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str = "") -> None:
        self.prefix = f"{prefix}:" if prefix and not prefix.endswith(":") else prefix

    def _k(self, key: str) -> str:
        return self.prefix + key

    def namespace_pattern(self) -> str:
        """SCAN glob matching every key under this prefix (``*`` when there is none)."""
        return glob_escape(self.prefix) + "*"

    # -- Sidekiq's keys -------------------------------------------------------------------------
    @property
    def queues(self) -> str:
        return self._k("queues")

    def queue(self, name: str) -> str:
        return self._k(f"queue:{name}")

    def queue_name(self, key: str) -> str:
        """Inverse of :meth:`queue`."""
        return key[len(self._k("queue:")) :]

    @property
    def schedule(self) -> str:
        return self._k("schedule")

    @property
    def retry(self) -> str:
        return self._k("retry")

    @property
    def dead(self) -> str:
        return self._k("dead")

    @property
    def processes(self) -> str:
        return self._k("processes")

    def process(self, identity: str) -> str:
        return self._k(identity)

    def work(self, identity: str) -> str:
        """What each thread runs (Sidekiq 7 name)."""
        return self._k(f"{identity}:work")

    def workers(self, identity: str) -> str:
        """What each thread runs (Sidekiq 6 name, read by Sidekiq 6.x's ``Workers`` API)."""
        return self._k(f"{identity}:workers")

    def signals(self, identity: str) -> str:
        return self._k(f"{identity}-signals")

    def stat(self, name: str) -> str:
        return self._k(f"stat:{name}")

    def stat_daily(self, name: str, day: str) -> str:
        return self._k(f"stat:{name}:{day}")

    # -- Conveyor's own keys --------------------------------------------------------------------
    @property
    def interrupted(self) -> str:
        return self._k("interrupted")

    def working(self, identity: str) -> str:
        """The reliable-fetch working list of one process."""
        return self._k(f"conveyor:working:{identity}")

    def boundary(self, identity: str) -> str:
        """The oldest job in a process's working list that it has not started (a payload;
        absent: every job there may have started). Jobs newer than it were only prefetched,
        so recovery does not count them as interrupted."""
        return self._k(f"conveyor:boundary:{identity}")

    def trimmed(self, zset: str) -> str:
        """Counter of entries dropped from a capped set (``dead``, ``interrupted``) when it
        overflowed or aged out."""
        return self._k(f"conveyor:stat:trimmed:{zset}")

    @property
    def working_registry(self) -> str:
        """Set of identities that may own a working list (so recovery never needs SCAN)."""
        return self._k("conveyor:working-registry")

    def liveness(self, identity: str) -> str:
        """Short-lived key a process refreshes with every heartbeat."""
        return self.liveness_prefix + identity

    def lock(self, name: str) -> str:
        return self._k(f"conveyor:lock:{name}")

    def moving(self, queue: str) -> str:
        """Hash of the unfinished moves of a queue to another store (``migrate-queue
        --to-store``): run id -> JSON destination. A rerun finishes what they left."""
        return self._k(f"conveyor:moving:{queue}")

    def moving_list(self, queue: str, run: str) -> str:
        """Jobs one move took off the queue and has not confirmed in the other store yet."""
        return self._k(f"conveyor:moving:{queue}:{run}")

    def moving_set(self, queue: str, run: str, zset: str) -> str:
        """The same for entries taken out of the ``zset`` sorted set, with their scores."""
        return self._k(f"conveyor:moving:{queue}:{run}:{zset}")

    # -- features -------------------------------------------------------------------------------
    @property
    def retired_classes(self) -> str:
        """Set: job class names ``remove_jobs`` found jobs of (so a re-run knows them)."""
        return self._k("conveyor:retired-classes")

    @property
    def retired_queues(self) -> str:
        """Set: queue names ``migrate_queue`` moved jobs from (so a re-run knows them)."""
        return self._k("conveyor:retired-queues")

    @property
    def flags(self) -> str:
        """Hash: flag name -> JSON state."""
        return self._k("conveyor:flags")

    def dedup(self, digest: str) -> str:
        """Deduplication cookie of one (class, idempotency arguments) digest."""
        return self._k(f"conveyor:dedup:{digest}")

    def limit_running(self, job_class: str) -> str:
        """Zset of ``identity|jid`` slots held by running jobs of a limited class."""
        return self._k(f"conveyor:limit:{job_class}:running")

    def limit_deferred(self, job_class: str) -> str:
        """List of jobs of a limited class waiting for a slot (oldest at the right end)."""
        return self._k(f"conveyor:limit:{job_class}:deferred")

    @property
    def limit_registry(self) -> str:
        """Set of limited class names with deferred jobs or slots."""
        return self._k("conveyor:limit-registry")

    @property
    def liveness_prefix(self) -> str:
        """What :meth:`liveness` puts before an identity (for scripts that check many)."""
        return self._k("conveyor:alive:")

    @property
    def cron(self) -> str:
        """Hash: cron entry name -> JSON definition and state."""
        return self._k("conveyor:cron")

    def cron_tick(self, name: str) -> str:
        """Last tick (epoch seconds) enqueued for a cron entry."""
        return self._k(f"conveyor:cron:{name}:last")

    # -- metrics (web dashboard and /metrics, issue #9) ------------------------------------------
    @property
    def metrics(self) -> str:
        """Hash: JSON ``[series, label values...]`` -> cluster-wide cumulative count or sum,
        written in batches by :mod:`conveyor.features.metrics` (lua/metrics_add.lua)."""
        return self._k("conveyor:metrics")

    # -- bulk operations (SPEC OPS-1) -----------------------------------------------------------
    def background_operation(self, operation_id: str) -> str:
        """Hash of one tracked bulk operation (GitLab's name, so the layout is the seed's)."""
        return self._k(f"background_operation:{operation_id}")

    def background_operation_failed_items(self, operation_id: str) -> str:
        """List of JSON failed items of one operation."""
        return self._k(f"background_operation:{operation_id}:failed_items")

    def background_operation_batches(self, operation_id: str) -> str:
        """Set of batch ids already counted, so a redelivered batch is not counted twice."""
        return self._k(f"background_operation:{operation_id}:batches")

    def background_operation_finished(self, operation_id: str) -> str:
        """Final totals of a deleted operation (JSON), so a late scheduler does not redo it."""
        return self._k(f"conveyor:background-operation-finished:{operation_id}")

    @property
    def background_operations(self) -> str:
        """Zset of operation ids by creation time (so listing needs no SCAN)."""
        return self._k("conveyor:background-operations")

    # -- imports (SPEC IMP-*, issue #8; see conveyor/redis/imports.py) ---------------------------
    def import_state(self, import_id: str) -> str:
        """Hash of one import: status, current stage, per-stage totals, options, timestamps."""
        return self._k(f"conveyor:import:{import_id}")

    def import_pending(self, import_id: str, stage: str) -> str:
        """Set of record tokens of a stage not finished yet (the stage's pending counter)."""
        return self._k(f"conveyor:import:{import_id}:pending:{stage}")

    def import_seen(self, import_id: str, stage: str) -> str:
        """Set of every record token a stage ever registered (so a rerun counts none twice)."""
        return self._k(f"conveyor:import:{import_id}:seen:{stage}")

    def import_cursors(self, import_id: str) -> str:
        """Hash: progress pointer name -> saved cursor."""
        return self._k(f"conveyor:import:{import_id}:cursors")

    def import_failures(self, import_id: str) -> str:
        """Hash: 'stage|record id' -> JSON failure (error class, message, retryable)."""
        return self._k(f"conveyor:import:{import_id}:failures")

    @property
    def imports(self) -> str:
        """Zset of import ids by creation time (listing needs no SCAN)."""
        return self._k("conveyor:imports")

    @property
    def imports_running(self) -> str:
        """Zset of running import ids by the time their progress last moved (stuck detector)."""
        return self._k("conveyor:imports:running")

    def import_cache(self, namespace: str, key: str) -> str:
        """One cached value of the import cache (24 h default TTL)."""
        return self._k(f"conveyor:import-cache:{namespace}:{key}")

    # -- automation workflows (SPEC AUTO-3 … AUTO-9, conveyor/redis/automation.py) --------------
    def automation_run(self, run_id: str) -> str:
        """Hash of one workflow run (state, fences, counters, summary)."""
        return self._k(f"conveyor:automation:run:{run_id}")

    def automation_run_results(self, run_id: str) -> str:
        """Hash: task index -> JSON result of the task (one per index, however often it ran)."""
        return self._k(f"conveyor:automation:run:{run_id}:results")

    def automation_run_started(self, run_id: str) -> str:
        """Hash: task index -> node id that started it (for the running count)."""
        return self._k(f"conveyor:automation:run:{run_id}:started")

    @property
    def automation_runs(self) -> str:
        """Zset of every run id by creation time."""
        return self._k("conveyor:automation:runs")

    def automation_workflow_runs(self, workflow: str) -> str:
        """Zset of one workflow's run ids by creation time."""
        return self._k(f"conveyor:automation:runs:{workflow}")

    def automation_active(self, workflow: str) -> str:
        """Set of a workflow's unfinished run ids (what its master drives)."""
        return self._k(f"conveyor:automation:active:{workflow}")

    def automation_fence(self, workflow: str) -> str:
        """The highest master fence seen for a workflow; lower fences are stale."""
        return self._k(f"conveyor:automation:fence:{workflow}")

    def automation_rejected(self, workflow: str) -> str:
        """Count of fenced writes refused as stale for a workflow."""
        return self._k(f"conveyor:automation:rejected:{workflow}")

    def automation_cron(self, workflow: str) -> str:
        """Last cron tick of a workflow's prepare schedule claimed by a master."""
        return self._k(f"conveyor:automation:cron:{workflow}")

    @property
    def automation_nodes(self) -> str:
        """Hash: node id -> JSON heartbeat (host, pid, throttle, masters, last seen)."""
        return self._k("conveyor:automation:nodes")

    def automation_metrics(self, workflow: str) -> str:
        """Hash of a workflow's cumulative metrics (task counters, step duration buckets, runs
        finished by state, master changes and conflicts)."""
        return self._k(f"conveyor:automation:metrics:{workflow}")

    def automation_master(self, workflow: str, fence: int) -> str:
        """The node acting as master of a workflow under one fence (expires with the term): a
        second node with the same fence finds it and refuses to act."""
        return self._k(f"conveyor:automation:master:{workflow}:{fence}")

    @property
    def automation_realtime(self) -> str:
        """Zset of real-time requests handed to nodes, by the time their caller gives up."""
        return self._k("conveyor:automation:realtime")

    def automation_reply(self, request_id: str) -> str:
        """List a node pushes one real-time task's result onto for the waiting web process."""
        return self._k(f"conveyor:automation:reply:{request_id}")

    # -- leader election (automation, issue #6) -------------------------------------------------
    def lease(self, name: str) -> str:
        """Hash of one Redis-held leader lease: holder, fence, expires_ms, renewed, released."""
        return self._k(f"conveyor:lease:{name}")

    def lease_fence(self, name: str) -> str:
        """Fence counter of one lease (INCR on every new term; never expires, so a fence is
        never handed out twice even if the lease hash is deleted)."""
        return self._k(f"conveyor:lease-fence:{name}")

    # -- web dashboard logins (issue #15; conveyor/redis/web_logins.py) ------------------------
    def web_session(self, digest: str) -> str:
        """Hash of one dashboard login session (user, credential id, created), named by the
        SHA-256 of the session id its cookie holds; it expires with the session."""
        return self.web_session_prefix + digest

    @property
    def web_session_prefix(self) -> str:
        """What :meth:`web_session` puts before a digest (for the scripts that revoke)."""
        return self._k("conveyor:web:session:")

    @property
    def web_sessions(self) -> str:
        """Zset: session digest -> expiry (epoch ms), so revoking needs no SCAN."""
        return self._k("conveyor:web:sessions")

    def web_login_failures(self, kind: str, digest: str) -> str:
        """Failed logins of one client or user in the current window (a counter with a TTL)."""
        return self._k(f"conveyor:web:login-failures:{kind}:{digest}")

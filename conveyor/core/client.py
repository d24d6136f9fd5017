"""Enqueueing: build the payload, run the client middleware, push to Redis (SPEC CORE-1, CORE-6).

A testing mode (see :mod:`conveyor.core.testing`) replaces the push by setting the client's
``sink``: jobs then run at once (inline) or are collected in memory (fake).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from conveyor.core._protocols import AppLike
from conveyor.core.job import EnqueueResult, Job
from conveyor.core.middleware import Chain, ClientMiddleware, EnqueueContext
from conveyor.core.payload import Payload, check_args, dumps, encode_args, new_jid, new_jids
from conveyor.errors import EnqueueError, NotDurableError


class ClientHost(AppLike, Protocol):
    """The app as the client sees it: the core view plus the client middleware chain."""

    @property
    def client_middleware(self) -> Chain[ClientMiddleware]: ...

    def check_options(self, name: str, options: Mapping[str, Any]) -> None: ...


class Sink(Protocol):
    """Where pushes go instead of Redis while a testing mode is on."""

    def capture(self, job: Payload, at: float | None) -> None: ...


# Placeholders in the bulk template; plain ASCII that JSON writes unchanged.
_ARGS_SLOT = "conveyor-args-slot-7f3a9c"
_JID_SLOT = "conveyor-jid-slot-7f3a9c"


class Client:
    """Pushes jobs for one :class:`~conveyor.core.app.App`."""

    def __init__(self, app: ClientHost) -> None:
        self.app = app
        #: Set by a testing mode: pushes go there instead of Redis.
        self.sink: Sink | None = None

    @property
    def live(self) -> bool:
        """Whether pushes go to Redis (no testing mode is on)."""
        return self.sink is None

    def build(
        self, job_class: type[Job] | str, args: Sequence[Any], options: Mapping[str, Any]
    ) -> tuple[type[Job] | None, Payload]:
        """The payload for one job (not yet pushed)."""
        cls, name = self._resolve(job_class)
        base: Mapping[str, Any] = cls.conveyor_options if cls is not None else {}
        if options:
            self.app.check_options(name, options)
        opts = {**base, **options}
        job: Payload = {
            "class": name,
            "args": check_args(args, name),
            "queue": opts.get("queue") or "default",
            "retry": opts.get("retry", True),
            "jid": new_jid(),
            "created_at": self.app.clock.time(),
        }
        if opts.get("backtrace"):
            job["backtrace"] = opts["backtrace"]
        if opts.get("dead") is False:
            job["dead"] = False
        if opts.get("retry_queue"):
            job["retry_queue"] = opts["retry_queue"]
        if opts.get("tags"):
            job["tags"] = list(opts["tags"])
        return cls, job

    def enqueue(
        self,
        job_class: type[Job] | str,
        args: Sequence[Any],
        options: Mapping[str, Any] | None = None,
        *,
        at: float | None = None,
    ) -> EnqueueResult:
        """Build, pass through the client middleware and push one job."""
        cls, job = self.build(job_class, args, options or {})
        return self._enqueue_one(cls, job, at)

    def enqueue_bulk(
        self,
        job_class: type[Job] | str,
        args_list: Sequence[Sequence[Any]],
        options: Mapping[str, Any] | None = None,
        batch_size: int = 1000,
        *,
        at: float | None = None,
    ) -> list[str]:
        """Enqueue many jobs of one class; one round trip per ``batch_size`` jobs."""
        if batch_size < 1:
            raise EnqueueError(f"batch_size must be >= 1, got {batch_size}")
        options = options or {}
        cls, name = self._resolve(job_class)
        if self.sink is None and not self._middleware_for(cls):
            return self._bulk_plain(
                cls, name, args_list, options=options, batch_size=batch_size, at=at
            )
        # Validate everything first so a bad item leaves nothing half-pushed.
        built = [self.build(job_class, args, options) for args in args_list]
        jids: list[str] = []
        for start in range(0, len(built), batch_size):
            contexts = [
                EnqueueContext(self.app, cls, job, at)
                for cls, job in built[start : start + batch_size]
            ]
            self._before(contexts)
            kept = [c for c in contexts if c.dropped is None]
            replicas = self._push(kept)
            self._after(contexts)
            self._check_durable(replicas, [c.job["jid"] for c in kept], jids)
            jids += [c.job["jid"] for c in kept]
        return jids

    def _bulk_plain(
        self,
        cls: type[Job] | None,
        name: str,
        args_list: Sequence[Sequence[Any]],
        *,
        options: Mapping[str, Any],
        batch_size: int,
        at: float | None,
    ) -> list[str]:
        """Bulk enqueue when no client middleware applies: the payload is encoded once as a
        template and each job only adds its args and jid, byte for byte what :meth:`build`
        and :meth:`_push` would write. Like Sidekiq's ``push_bulk``, the jobs of one call
        share ``created_at``."""
        # Every item is checked before the first push, so a bad one leaves nothing half-pushed.
        encoded = [encode_args(args, name) for args in args_list]
        now = self.app.clock.time()
        scheduled = at is not None and at > now
        _, template = self.build(cls if cls is not None else name, [], options)
        template["args"] = _ARGS_SLOT
        template["jid"] = _JID_SLOT
        template["created_at"] = now
        if not scheduled:
            template["enqueued_at"] = now
        head, rest = dumps(template).split(f'"{_ARGS_SLOT}"')
        middle, tail = rest.split(f'"{_JID_SLOT}"')
        middle += '"'
        tail = '"' + tail
        queue = template["queue"]
        jids = new_jids(len(encoded))
        store = self.app.store
        for start in range(0, len(encoded), batch_size):
            batch = zip(encoded[start : start + batch_size], jids[start:], strict=False)
            payloads = [f"{head}{args}{middle}{jid}{tail}" for args, jid in batch]
            if scheduled:
                assert at is not None
                replicas = store.push({}, [(at, p) for p in payloads], **self._durability())
            else:
                replicas = store.push({queue: payloads}, **self._durability())
            self._check_durable(replicas, jids[start : start + batch_size], jids[:start])
        return jids

    def _resolve(self, job_class: type[Job] | str) -> tuple[type[Job] | None, str]:
        if isinstance(job_class, str):
            return self.app.registry.get(job_class), job_class
        return job_class, job_class.wire_name()

    def _middleware_for(self, cls: type[Job] | None) -> bool:
        """Whether any client middleware applies to enqueues of ``cls``."""
        return any(m.applies_to(cls) for m in self.app.client_middleware)

    def push_payload(self, job: Payload, at: float | None = None) -> EnqueueResult:
        """Push a complete payload (e.g. one built by another system), with client middleware."""
        job = dict(job)
        job.setdefault("jid", new_jid())
        job.setdefault("created_at", self.app.clock.time())
        job.setdefault("queue", "default")
        job.setdefault("retry", True)
        check_args(job.get("args", []), str(job.get("class")))
        return self._enqueue_one(self.app.registry.get(str(job.get("class"))), job, at)

    # -- internals ------------------------------------------------------------------------------
    def _enqueue_one(self, cls: type[Job] | None, job: Payload, at: float | None) -> EnqueueResult:
        ctx = EnqueueContext(self.app, cls, job, at)
        if not self._middleware_for(cls):
            replicas = self._push([ctx])
            self._check_durable(replicas, [job["jid"]])
            return EnqueueResult(jid=job["jid"], info={}, replicas=replicas)
        self._before([ctx])
        replicas = self._push([ctx]) if ctx.dropped is None else None
        self._after([ctx])
        self._check_durable(replicas, [job["jid"]])
        return self._result(ctx, replicas)

    def _before(self, contexts: Sequence[EnqueueContext]) -> None:
        """Client middleware in chain order, each over the contexts not dropped yet (so a
        middleware can do its Redis work for a whole bulk batch in one round trip)."""
        for middleware in self.app.client_middleware:
            active = [c for c in contexts if c.dropped is None]
            if not active:
                break
            middleware.before_enqueue_many(active)
            for ctx in active:
                ctx.info["_ran"] = ctx.info.get("_ran", 0) + 1

    def _after(self, contexts: Sequence[EnqueueContext]) -> None:
        chain = self.app.client_middleware.entries()
        ran = [c.info.pop("_ran", 0) for c in contexts]
        for index in range(len(chain) - 1, -1, -1):
            for ctx, count in zip(contexts, ran, strict=True):
                if count > index:
                    chain[index].after_enqueue(ctx)

    def _push(self, contexts: Sequence[EnqueueContext]) -> int | None:
        """Push; the replicas that confirmed it when ``min_replicas`` asks, else ``None``."""
        if not contexts:
            return None
        if self.sink is not None:
            for ctx in contexts:
                self.sink.capture(ctx.job, ctx.at)
            return None
        now = self.app.clock.time()
        by_queue: dict[str, list[str]] = {}
        scheduled: list[tuple[float, str]] = []
        for ctx in contexts:
            if ctx.at is not None and ctx.at > now:
                scheduled.append((ctx.at, dumps(ctx.job)))
            else:
                ctx.job["enqueued_at"] = now
                by_queue.setdefault(ctx.job["queue"], []).append(dumps(ctx.job))
        return self.app.store.push(by_queue, scheduled, **self._durability())

    def _durability(self) -> dict[str, Any]:
        settings = self.app.settings
        if not settings.min_replicas:
            return {}
        return {"replicas": settings.min_replicas, "timeout": settings.min_replicas_timeout}

    def _check_durable(
        self, replicas: int | None, jids: Sequence[str], confirmed: Sequence[str] = ()
    ) -> None:
        """Raise :class:`NotDurableError` when fewer replicas confirmed a push than asked."""
        need = self.app.settings.min_replicas
        if replicas is None or replicas >= need or not jids:
            return
        raise NotDurableError(
            f"{len(jids)} job(s) (first jid {jids[0]}) were written to the Redis primary but "
            f"confirmed by {replicas} of the {need} replica(s) min_replicas asks for within "
            f"{self.app.settings.min_replicas_timeout}s: they normally run, but a failover of "
            "the primary before they reach a replica loses them. Check the replicas (INFO "
            "replication); enqueue again only if the job is idempotent, as it may run twice",
            jids=jids,
            confirmed=confirmed,
            replicas=replicas,
            required=need,
        )

    @staticmethod
    def _result(ctx: EnqueueContext, replicas: int | None = None) -> EnqueueResult:
        info = {k: v for k, v in ctx.info.items() if not k.startswith("_")}
        return EnqueueResult(
            jid=ctx.job["jid"],
            queued=ctx.dropped is None,
            dropped=ctx.dropped,
            info=info,
            replicas=replicas,
        )

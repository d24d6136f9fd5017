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
from conveyor.errors import ConfigurationError, EnqueueError, NotDurableError
from conveyor.routing import DEFAULT_STORE, Route, Router


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
        self._router: Router | None = None

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
        options = options or {}
        cls, job = self.build(job_class, args, options)
        return self._enqueue_one(cls, job, at, self._route(cls, job, options))

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
        stores = [self._route(cls, job, options) for cls, job in built]
        jids: list[str] = []
        for start in range(0, len(built), batch_size):
            contexts = [
                EnqueueContext(self.app, cls, job, at, store_name=store)
                for (cls, job), store in zip(
                    built[start : start + batch_size], stores[start:], strict=False
                )
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
        store = self.app.stores.get(self._route(cls, template, options))
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
        cls = self.app.registry.get(str(job.get("class")))
        return self._enqueue_one(cls, job, at, self._route(cls, job, {}))

    def route(
        self,
        job_class: type[Job] | str,
        queue: str | None = None,
        tags: Sequence[str] | None = None,
        store: str | None = None,
    ) -> Route:
        """Where a job of ``job_class`` would go: the routing rules over its class name,
        queue and tags, with a ``store`` option (given, else declared) winning over the
        rules' store. Example: ``app.client.route(Heavy)`` -> ``Route('default', 'b')``.
        """
        cls, name = self._resolve(job_class)
        declared: Mapping[str, Any] = cls.conveyor_options if cls is not None else {}
        explicit = store or declared.get("store")
        queue = queue or declared.get("queue") or "default"
        tags = tuple(declared.get("tags") or ()) if tags is None else tags
        if not self.app.settings.routing_rules:
            return Route(queue, explicit or DEFAULT_STORE)
        return self._rules().route(name, queue, tags, explicit)

    def _rules(self) -> Router:
        rules = self.app.settings.routing_rules
        router = self._router
        if router is None or router.rules is not rules:
            router = self._router = Router(rules)
        return router

    def _route(self, cls: type[Job] | None, job: Payload, options: Mapping[str, Any]) -> str:
        """Route a built job: set its queue, return its store's name (checked)."""
        declared: Mapping[str, Any] = cls.conveyor_options if cls is not None else {}
        explicit = options.get("store") or declared.get("store")
        if self.app.settings.routing_rules:
            tags = job.get("tags") or ()
            route = self._rules().route(str(job["class"]), job["queue"], tags, explicit)
            job["queue"] = route.queue
            name = route.store
        else:
            name = explicit or DEFAULT_STORE
        if name != DEFAULT_STORE and name not in self.app.settings.stores:
            known = ", ".join((DEFAULT_STORE, *sorted(self.app.settings.stores)))
            raise ConfigurationError(
                f"{job['class']}: store={name!r} is not configured (known stores: {known}); "
                "add it to Settings(stores=...) / CONVEYOR_STORES, or drop the store option"
            )
        return name

    # -- internals ------------------------------------------------------------------------------
    def _enqueue_one(
        self, cls: type[Job] | None, job: Payload, at: float | None, store: str
    ) -> EnqueueResult:
        ctx = EnqueueContext(self.app, cls, job, at, store_name=store)
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
        # Each store gets its share in one transaction; a bulk call routes to one store.
        pushes: dict[str, tuple[dict[str, list[str]], list[tuple[float, str]]]] = {}
        for ctx in contexts:
            by_queue, scheduled = pushes.setdefault(ctx.store_name, ({}, []))
            if ctx.at is not None and ctx.at > now:
                scheduled.append((ctx.at, dumps(ctx.job)))
            else:
                ctx.job["enqueued_at"] = now
                by_queue.setdefault(ctx.job["queue"], []).append(dumps(ctx.job))
        confirmed: list[int] = []
        for name, (by_queue, scheduled) in pushes.items():
            store = self.app.stores.get(name)
            replicas = store.push(by_queue, scheduled, **self._durability())
            if replicas is not None:
                confirmed.append(replicas)
        return min(confirmed) if confirmed else None

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

"""Enqueueing: build the payload, run the client middleware, push to Redis (SPEC CORE-1, CORE-6).

Every enqueue is written once, as a plan (:mod:`conveyor.redis.calls`): the sync methods drive
it with the app's blocking client, the ``a``-prefixed ones (``aenqueue``...) with a
``redis.asyncio`` client, so both write the same bytes through the same middleware.

A testing mode (see :mod:`conveyor.core.testing`) replaces the push by setting the client's
``sink``: jobs then run at once (inline) or are collected in memory (fake).

>>> await app.client.aenqueue("HardWorker", ["bob", 5])          # doctest: +SKIP
EnqueueResult(jid='...', queued=True, dropped=None, info={})
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from conveyor.core._protocols import AppLike
from conveyor.core.arguments import spec_of
from conveyor.core.job import EnqueueResult, Job
from conveyor.core.middleware import Chain, ClientMiddleware, EnqueueContext
from conveyor.core.payload import Payload, check_args, dumps, encode_args, new_jid, new_jids
from conveyor.errors import ConfigurationError, EnqueueError, NotDurableError
from conveyor.redis.aio import AsyncStore
from conveyor.redis.calls import Call, Plan, run_async, run_sync
from conveyor.redis.keys import Keys
from conveyor.redis.store import durable_push_call, push_commands
from conveyor.routing import DEFAULT_STORE, Route, Router


class ClientHost(AppLike, Protocol):
    """The app as the client sees it: the core view, the client middleware chain and the
    asyncio store of the running loop."""

    @property
    def client_middleware(self) -> Chain[ClientMiddleware]: ...

    def normalize_options(
        self, name: str, options: Mapping[str, Any], *, enqueue: bool = False
    ) -> dict[str, Any]: ...

    def async_store(self) -> AsyncStore: ...


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
        self._keys_cache: tuple[str, Keys] | None = None
        self._router: Router | None = None

    @property
    def live(self) -> bool:
        """Whether pushes go to Redis (no testing mode is on)."""
        return self.sink is None

    def build(
        self,
        job_class: type[Job] | str,
        args: Sequence[Any],
        options: Mapping[str, Any],
        *,
        checked: bool = False,
        template: bool = False,
    ) -> tuple[type[Job] | None, Payload]:
        """The payload for one job (not yet pushed); ``checked``: ``options`` were normalized
        already; ``template``: the args come later (the bulk template), do not check them."""
        cls, name = self._resolve(job_class)
        base: Mapping[str, Any] = cls.conveyor_options if cls is not None else {}
        if options and not checked:
            options = self.app.normalize_options(name, options, enqueue=True)
        opts = {**base, **options}
        args = check_args(args, name)
        if not template:
            _check_signature(cls, name, [args], opts)
        job: Payload = {
            "class": name,
            "args": args,
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
        if opts.get("wal_locations"):
            job["wal_locations"] = dict(opts["wal_locations"])
        return cls, job

    # -- the four entry points: one plan each, run sync or async --------------------------------
    def enqueue(
        self,
        job_class: type[Job] | str,
        args: Sequence[Any],
        options: Mapping[str, Any] | None = None,
        *,
        at: float | None = None,
    ) -> EnqueueResult:
        """Build, pass through the client middleware and push one job."""
        plan = self._enqueue_plan(job_class, args, options, at)
        return run_sync(self._store, plan, self._named)

    async def aenqueue(
        self,
        job_class: type[Job] | str,
        args: Sequence[Any],
        options: Mapping[str, Any] | None = None,
        *,
        at: float | None = None,
    ) -> EnqueueResult:
        """:meth:`enqueue` on redis.asyncio (same middleware, same bytes)."""
        plan = self._enqueue_plan(job_class, args, options, at)
        return await run_async(self.app.async_store, plan, self._named_async)

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
        plan = self._bulk_plan(job_class, args_list, options, batch_size, at)
        return run_sync(self._store, plan, self._named)

    async def aenqueue_bulk(
        self,
        job_class: type[Job] | str,
        args_list: Sequence[Sequence[Any]],
        options: Mapping[str, Any] | None = None,
        batch_size: int = 1000,
        *,
        at: float | None = None,
    ) -> list[str]:
        """:meth:`enqueue_bulk` on redis.asyncio."""
        plan = self._bulk_plan(job_class, args_list, options, batch_size, at)
        return await run_async(self.app.async_store, plan, self._named_async)

    def push_payload(self, job: Payload, at: float | None = None) -> EnqueueResult:
        """Push a complete payload (e.g. one built by another system), with client middleware."""
        job = dict(job)
        job.setdefault("jid", new_jid())
        job.setdefault("created_at", self.app.clock.time())
        job.setdefault("queue", "default")
        job.setdefault("retry", True)
        check_args(job.get("args", []), str(job.get("class")))
        cls = self.app.registry.get(str(job.get("class")))
        return run_sync(
            self._store, self._one_plan(cls, job, at, self._route(cls, job, {})), self._named
        )

    # -- routing --------------------------------------------------------------------------------
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

    # -- plans ----------------------------------------------------------------------------------
    def _store(self) -> Any:
        return self.app.store

    def _named(self, name: str) -> Any:
        return self.app.stores.get(name)

    def _named_async(self, name: str) -> Any:
        return self.app.stores.get_async(name)

    def _keys(self) -> Keys:
        prefix = self.app.settings.key_prefix
        if self._keys_cache is None or self._keys_cache[0] != prefix:
            self._keys_cache = (prefix, Keys(prefix))
        return self._keys_cache[1]

    def _enqueue_plan(
        self,
        job_class: type[Job] | str,
        args: Sequence[Any],
        options: Mapping[str, Any] | None,
        at: float | None,
    ) -> Plan[EnqueueResult]:
        options = options or {}
        cls, job = self.build(job_class, args, options)
        return (yield from self._one_plan(cls, job, at, self._route(cls, job, options)))

    def _one_plan(
        self, cls: type[Job] | None, job: Payload, at: float | None, store: str
    ) -> Plan[EnqueueResult]:
        ctx = EnqueueContext(self.app, cls, job, at, store_name=store)
        if not self._middleware_for(cls):
            replicas = yield from self._push_plan([ctx])
            self._check_durable(replicas, [job["jid"]])
            return EnqueueResult(jid=job["jid"], info={}, replicas=replicas)
        yield from self._before_plan([ctx])
        replicas = (yield from self._push_plan([ctx])) if ctx.dropped is None else None
        self._after([ctx])
        self._check_durable(replicas, [job["jid"]])
        return self._result(ctx, replicas)

    def _bulk_plan(
        self,
        job_class: type[Job] | str,
        args_list: Sequence[Sequence[Any]],
        options: Mapping[str, Any] | None,
        batch_size: int,
        at: float | None,
    ) -> Plan[list[str]]:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise EnqueueError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
        cls, name = self._resolve(job_class)
        opts = self.app.normalize_options(name, options, enqueue=True) if options else {}
        if self.sink is None and not self._middleware_for(cls):
            plain = self._bulk_plain(
                cls, name, args_list, options=opts, batch_size=batch_size, at=at
            )
            return (yield from plain)
        # Validate everything first so a bad item leaves nothing half-pushed.
        built = [self.build(job_class, args, opts, checked=True) for args in args_list]
        stores = [self._route(cls, job, opts) for cls, job in built]
        jids: list[str] = []
        for start in range(0, len(built), batch_size):
            contexts = [
                EnqueueContext(self.app, cls, job, at, store_name=store)
                for (cls, job), store in zip(
                    built[start : start + batch_size], stores[start:], strict=False
                )
            ]
            yield from self._before_plan(contexts)
            kept = [c for c in contexts if c.dropped is None]
            replicas = yield from self._push_plan(kept)
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
    ) -> Plan[list[str]]:
        """Bulk enqueue when no client middleware applies: the payload is encoded once as a
        template and each job only adds its args and jid, byte for byte what :meth:`build`
        and :meth:`_push_plan` would write. Like Sidekiq's ``push_bulk``, the jobs of one call
        share ``created_at``."""
        # Every item is checked before the first push, so a bad one leaves nothing half-pushed.
        encoded = [encode_args(args, name) for args in args_list]
        target = cls if cls is not None else name
        _, template = self.build(target, [], options, checked=True, template=True)
        store = self._route(cls, template, options)
        if cls is not None:
            _check_signature(cls, name, args_list, {**cls.conveyor_options, **options})
        now = self.app.clock.time()
        scheduled = at is not None and at > now
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
        keys = self._keys()
        for start in range(0, len(encoded), batch_size):
            batch = zip(encoded[start : start + batch_size], jids[start:], strict=False)
            payloads = [f"{head}{args}{middle}{jid}{tail}" for args, jid in batch]
            if scheduled:
                assert at is not None
                replicas = yield from self._write(keys, {}, [(at, p) for p in payloads], store)
            else:
                replicas = yield from self._write(keys, {queue: payloads}, (), store)
            self._check_durable(replicas, jids[start : start + batch_size], jids[:start])
        return jids

    def _resolve(self, job_class: type[Job] | str) -> tuple[type[Job] | None, str]:
        if isinstance(job_class, str):
            return self.app.registry.get(job_class), job_class
        return job_class, job_class.wire_name()

    def _middleware_for(self, cls: type[Job] | None) -> bool:
        """Whether any client middleware applies to enqueues of ``cls``."""
        return any(m.applies_to(cls) for m in self.app.client_middleware)

    def _before_plan(self, contexts: Sequence[EnqueueContext]) -> Plan[None]:
        """Client middleware in chain order, each over the contexts not dropped yet (so a
        middleware can do its Redis work for a whole bulk batch in one round trip)."""
        for middleware in self.app.client_middleware:
            active = [c for c in contexts if c.dropped is None]
            if not active:
                break
            yield from middleware.enqueue_plan(active)
            for ctx in active:
                ctx.info["_ran"] = ctx.info.get("_ran", 0) + 1

    def _after(self, contexts: Sequence[EnqueueContext]) -> None:
        chain = self.app.client_middleware.entries()
        ran = [c.info.pop("_ran", 0) for c in contexts]
        for index in range(len(chain) - 1, -1, -1):
            for ctx, count in zip(contexts, ran, strict=True):
                if count > index:
                    chain[index].after_enqueue(ctx)

    def _push_plan(self, contexts: Sequence[EnqueueContext]) -> Plan[int | None]:
        """Push; the replicas that confirmed it when ``min_replicas`` asks, else ``None``."""
        if not contexts:
            return None
        if self.sink is not None:
            for ctx in contexts:
                self.sink.capture(ctx.job, ctx.at)
            return None
        now = self.app.clock.time()
        # Each store gets its share in one round trip; a bulk call routes to one store.
        pushes: dict[str, tuple[dict[str, list[str]], list[tuple[float, str]]]] = {}
        for ctx in contexts:
            by_queue, scheduled = pushes.setdefault(ctx.store_name, ({}, []))
            if ctx.at is not None and ctx.at > now:
                scheduled.append((ctx.at, dumps(ctx.job)))
            else:
                ctx.job["enqueued_at"] = now
                by_queue.setdefault(ctx.job["queue"], []).append(dumps(ctx.job))
        confirmed: list[int] = []
        for store, (by_queue, scheduled) in pushes.items():
            replicas = yield from self._write(self._keys(), by_queue, scheduled, store)
            if replicas is not None:
                confirmed.append(replicas)
        return min(confirmed) if confirmed else None

    def _write(
        self,
        keys: Keys,
        by_queue: dict[str, list[str]],
        scheduled: Sequence[tuple[float, str]],
        store: str,
    ) -> Plan[int | None]:
        """One push round trip to ``store``: a MULTI/EXEC, or with ``min_replicas``
        ``push.lua`` and ``WAIT`` in one pipeline; returns the replicas that confirmed it
        (``None`` without)."""
        settings = self.app.settings
        if not settings.min_replicas:
            yield Call.transaction(push_commands(keys, by_queue, scheduled)).to(store)
            return None
        call = durable_push_call(
            keys, by_queue, scheduled, settings.min_replicas, settings.min_replicas_timeout
        )
        _, confirmed = yield call.to(store)
        return int(confirmed)

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


def _check_signature(
    cls: type[Job] | None, name: str, args_list: Sequence[Sequence[Any]], opts: Mapping[str, Any]
) -> None:
    """Refuse arguments ``perform`` cannot take (unless the job says ``check_args=False``).
    A class declared ``deprecated`` (features/transitions.py) is a no-op that takes anything."""
    if cls is None or not opts.get("check_args", True) or opts.get("deprecated"):
        return
    spec = spec_of(cls)
    if spec is not None:
        for args in args_list:
            spec.check(name, args)

"""One frozen settings object, built from arguments, ``CONVEYOR_*`` environment variables and
an optional JSON file, then passed explicitly. Nothing here runs at import time."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from conveyor.errors import ConfigurationError
from conveyor.redis_url import check_redis_url, mask_url
from conveyor.routing import DEFAULT_STORE, RoutingRule, check_store_name, parse_rules

DEFAULT_STATE_DIR = "~/.local/state/conveyor"


def parse_queues(spec: str | list[str] | tuple[str, ...]) -> tuple[tuple[str, int], ...]:
    """Parse Sidekiq-style queue specs: ``"critical,3 default low"`` or ``["critical,3", ...]``.

    >>> parse_queues("critical,3 default")
    (('critical', 3), ('default', 1))
    """
    items = spec.replace(";", " ").split() if isinstance(spec, str) else list(spec)
    out: list[tuple[str, int]] = []
    for item in items:
        name, _, weight = item.partition(",")
        name = name.strip()
        if not name:
            raise ConfigurationError(
                f"empty queue name in {spec!r}; write e.g. 'critical,3 default'"
            )
        try:
            w = int(weight) if weight else 1
        except ValueError:
            raise ConfigurationError(
                f"queue weight {weight!r} for {name!r} is not an integer; write e.g. '{name},2'"
            ) from None
        if w < 1:
            raise ConfigurationError(f"queue weight for {name!r} must be >= 1, got {w}")
        out.append((name, w))
    if not out:
        raise ConfigurationError("no queues given; name at least one, e.g. 'default'")
    return tuple(out)


@dataclass(frozen=True)
class Settings:
    """Everything a Conveyor client or worker needs to know.

    >>> s = Settings(redis_url="redis://localhost:6379/0", concurrency=5)
    >>> s.concurrency
    5
    """

    #: ``redis://``, ``rediss://``, ``unix://``, or ``redis+sentinel://`` /
    #: ``rediss+sentinel://`` (docs/scaling.md); ``None`` starts/reuses the embedded server.
    redis_url: str | None = None
    #: The user and password the Sentinels of a ``redis+sentinel://`` URL ask for (their
    #: ``requirepass`` or an ACL user), for every Sentinel URL of the app, ``stores``
    #: included. The URL's own credentials are the primary's. Set them in the environment
    #: (``CONVEYOR_SENTINEL_PASSWORD``) or the config file, never on a command line.
    sentinel_username: str | None = None
    sentinel_password: str | None = None
    #: More Redis instances beside ``redis_url`` (the store named ``default``), by name:
    #: ``{"b": "redis://jobs-b:6379/0"}``. Each is a complete Sidekiq keyspace (docs/scaling.md).
    stores: Mapping[str, str] = field(default_factory=dict)
    #: The store this process serves: a worker fetches, retries, schedules, recovers and runs
    #: cron there; the CLI and the dashboard show it. ``default`` or a name in ``stores``.
    store: str = DEFAULT_STORE
    #: Which queue and store jobs go to, first match wins: ``[["class=Heavy", null, "b"]]``
    #: (selector, queue or null to keep the job's, store or null for the default).
    routing_rules: tuple[RoutingRule, ...] = ()
    #: Prefix for every key (like redis-namespace), so several apps can share one Redis.
    key_prefix: str = ""
    #: Where the embedded Redis keeps its socket, data and lock.
    state_dir: str = DEFAULT_STATE_DIR
    #: Threads per worker process.
    concurrency: int = 10
    #: Worker processes started by ``conveyor worker``.
    processes: int = 1
    #: ``threads`` (a thread per concurrent job), ``asyncio`` (``async def`` jobs on one event
    #: loop) or ``auto``: asyncio when every job class the app registered is ``async def``,
    #: else threads (docs/concurrency-model.md).
    worker_mode: str = "auto"
    #: ``auto`` (default): a threads-mode ``conveyor worker`` process runs on one CPU core, so
    #: its threads never hand the GIL across cores, and moves off a core other processes keep
    #: busy (unpinned while every core is); its child processes get every core back. ``one``:
    #: each process pinned to one core for its life (the n-th process of ``-p N`` to the n-th
    #: core it may use, a lone process to the core it started on, or the next core no other
    #: pinned worker holds); ``none``: the OS places them, as for jobs whose C code runs beside
    #: the GIL (numpy, compression). Asyncio mode is never pinned (docs/concurrency-model.md,
    #: "Pinning a process to a core").
    cpu_affinity: str = "auto"
    #: The event loop of asyncio mode and of ``async def`` jobs in threads mode: ``auto``
    #: (uvloop when installed, as uvicorn's ``--loop auto``), ``uvloop`` or ``asyncio``.
    event_loop: str = "auto"
    #: Queues with weights, e.g. ``(("critical", 3), ("default", 1))``.
    queues: tuple[tuple[str, int], ...] = (("default", 1),)
    #: Strict order: always drain earlier queues first instead of weighted random choice.
    strict_order: bool = False
    #: Seconds a graceful shutdown waits for running jobs before requeueing them.
    shutdown_timeout: float = 25.0
    #: Seconds between heartbeats.
    heartbeat_interval: float = 5.0
    #: Seconds without a heartbeat after which a process counts as dead and its jobs are recovered.
    liveness_ttl: float = 15.0
    #: Seconds between orphan-recovery sweeps (one process sweeps per interval).
    recovery_interval: float = 5.0
    #: Average seconds between scheduled-set polls across the whole cluster.
    poll_interval_average: float = 5.0
    #: Jobs promoted per scheduled-poller script call.
    poll_batch: int = 100
    #: Extra jobs fetched beyond the free threads (they wait safely in the working list).
    prefetch: int | None = None
    #: Default retry count when a job says ``retry=True``.
    max_retries: int = 25
    dead_max_jobs: int = 10_000
    dead_timeout: float = 180 * 24 * 3600.0
    interrupted_max_jobs: int = 10_000
    interrupted_timeout: float = 90 * 24 * 3600.0
    #: Requeues after a crash before a job is parked in ``interrupted``; -1 disables the limit.
    max_retries_after_interruption: int = 3
    #: Free-form tag shown with the process (Sidekiq's ``tag``).
    tag: str = ""
    labels: tuple[str, ...] = ()
    #: ``"json"`` (one object per line), ``"text"``, or ``"auto"``: text on a terminal, else
    #: JSON (docs/logging.md).
    log_format: str = "auto"
    #: ``DEBUG``, ``INFO``, ``WARNING``, ``ERROR`` or ``CRITICAL``.
    log_level: str = "INFO"
    #: ``development``, ``test`` or ``production``; empty: ``CONVEYOR_ENV``, else production.
    #: Development and test mode make log contract violations raise (SPEC IMP-2).
    env: str = ""
    #: Replicas that must confirm each enqueue (Redis ``WAIT``) before it returns; 0: none.
    #: Short of that, the enqueue raises :class:`~conveyor.errors.NotDurableError`.
    min_replicas: int = 0
    #: Seconds an enqueue waits for ``min_replicas`` confirmations.
    min_replicas_timeout: float = 1.0
    #: ``appendfsync`` of the embedded server: ``everysec`` (up to ~1 s of writes lost on a
    #: power cut) or ``always`` (fsync before each write is acknowledged).
    embedded_fsync: str = "everysec"
    #: Seconds a Redis command on a Sentinel URL keeps retrying a lost connection (with
    #: backoff) before the error reaches the caller; long enough to span a failover.
    reconnect_timeout: float = 20.0
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.redis_url is not None:
            check_redis_url(self.redis_url)
        _check_stores(self)
        _check_durability(self)
        for name in ("concurrency", "processes", "max_retries", "dead_max_jobs", "poll_batch"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{name} must be a positive integer, got {value!r}")
        for name in ("shutdown_timeout", "heartbeat_interval", "liveness_ttl", "recovery_interval"):
            if getattr(self, name) <= 0:
                raise ConfigurationError(f"{name} must be > 0, got {getattr(self, name)!r}")
        _check_logging(self)
        if self.worker_mode not in ("auto", "threads", "asyncio"):
            raise ConfigurationError(
                f"worker_mode must be auto, threads or asyncio, got {self.worker_mode!r}"
            )
        if self.cpu_affinity not in ("auto", "none", "one"):
            raise ConfigurationError(
                f"cpu_affinity must be auto, none or one, got {self.cpu_affinity!r}"
            )
        if self.event_loop not in ("auto", "asyncio", "uvloop"):
            raise ConfigurationError(
                f"event_loop must be auto, asyncio or uvloop, got {self.event_loop!r}"
            )
        if self.liveness_ttl <= self.heartbeat_interval:
            raise ConfigurationError(
                f"liveness_ttl ({self.liveness_ttl}) must exceed heartbeat_interval "
                f"({self.heartbeat_interval}) or live processes would look dead"
            )

    def __repr__(self) -> str:
        # Settings end up in tracebacks and debug logs: the URL's password stays out, and of
        # ``extra`` (sections other features read, which may hold tokens) only the keys show.
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "redis_url" and value:
                value = mask_url(value)
            elif f.name == "sentinel_password" and value:
                value = "***"
            elif f.name == "stores":
                value = {name: mask_url(url) for name, url in value.items()}
            elif f.name == "extra":
                value = {key: "..." for key in value}
            shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    @property
    def queue_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.queues)

    @property
    def effective_prefetch(self) -> int:
        return self.concurrency if self.prefetch is None else self.prefetch

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied (validated again)."""
        if "queues" in changes and not _is_parsed_queues(changes["queues"]):
            changes["queues"] = parse_queues(changes["queues"])
        return dataclasses.replace(self, **changes)

    @classmethod
    def load(
        cls,
        file: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> Settings:
        """Build settings: defaults < JSON file < ``CONVEYOR_*`` environment < ``overrides``."""
        values: dict[str, Any] = {}
        env = os.environ if env is None else env
        path = file or env.get("CONVEYOR_CONFIG")
        if path:
            try:
                data = json.loads(Path(path).read_text())
            except (OSError, ValueError) as exc:
                raise ConfigurationError(f"cannot read settings file {path!r}: {exc}") from None
            if not isinstance(data, dict):
                raise ConfigurationError(f"settings file {path!r} must hold a JSON object")
            values.update(data)
        known = {f.name: f for f in fields(cls)}
        for key, raw in env.items():
            if not key.startswith("CONVEYOR_") or key == "CONVEYOR_CONFIG":
                continue
            name = key[len("CONVEYOR_") :].lower()
            if name in known and name != "extra":
                values[name] = _coerce(name, raw, known[name].type)
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigurationError(
                f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        if "queues" in values and not _is_parsed_queues(values["queues"]):
            values["queues"] = parse_queues(values["queues"])
        if "labels" in values:
            values["labels"] = tuple(values["labels"])
        return cls(**values)


def _check_logging(s: Settings) -> None:
    if s.log_format not in ("auto", "json", "text"):
        raise ConfigurationError(f"log_format must be auto, json or text, got {s.log_format!r}")
    if str(s.log_level).upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigurationError(
            f"log_level must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {s.log_level!r}"
        )
    if s.env not in ("", "development", "test", "production"):
        raise ConfigurationError(
            f"env must be development, test or production (or empty), got {s.env!r}"
        )


def _check_stores(s: Settings) -> None:
    """Validate (and normalise, on this frozen object) stores, store and routing rules."""
    if isinstance(s.stores, str):
        object.__setattr__(s, "stores", _json_setting("stores", s.stores))
    if not isinstance(s.stores, Mapping):
        raise ConfigurationError(
            f'stores must map store names to Redis URLs, e.g. {{"b": "redis://jobs-b:6379/0"}}, '
            f"got {type(s.stores).__name__}"
        )
    for name, url in s.stores.items():
        check_store_name(name, "store name")
        if name == DEFAULT_STORE:
            raise ConfigurationError(
                "stores may not define 'default': the default store is redis_url; "
                "give the other stores their own names"
            )
        if not isinstance(url, str) or not url:
            raise ConfigurationError(f"store {name!r} needs a Redis URL, got {url!r}")
        check_redis_url(url)
        if url == s.redis_url:
            raise ConfigurationError(
                f"store {name!r} has the same URL as redis_url (the default store): two stores "
                "must be two Redis instances (or databases)"
            )
    object.__setattr__(s, "stores", dict(s.stores))
    known = (DEFAULT_STORE, *sorted(s.stores))
    if s.store not in known:
        raise ConfigurationError(
            f"store {s.store!r} is not configured; known stores: {', '.join(known)} "
            "(add it to stores / CONVEYOR_STORES)"
        )
    rules = parse_rules(s.routing_rules)
    object.__setattr__(s, "routing_rules", rules)
    for index, rule in enumerate(rules):
        if rule.store is not None and rule.store not in known:
            raise ConfigurationError(
                f"routing rule {index + 1} ({rule.selector!r}) sends jobs to store "
                f"{rule.store!r}, which is not configured; known stores: {', '.join(known)}"
            )


_JSON_EXAMPLES = {
    "stores": '{"b": "redis://jobs-b:6379/0"}',
    "routing_rules": '[["class=Heavy", null, "b"]]',
}


def _json_setting(name: str, raw: str, label: str | None = None) -> Any:
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ConfigurationError(
            f"{label or name} is not valid JSON ({exc}); write e.g. {_JSON_EXAMPLES[name]}"
        ) from None


def _check_durability(s: Settings) -> None:
    if not isinstance(s.min_replicas, int) or s.min_replicas < 0:
        raise ConfigurationError(
            f"min_replicas must be an integer >= 0 (0: no replica confirmation), "
            f"got {s.min_replicas!r}"
        )
    if s.min_replicas and s.redis_url is None:
        raise ConfigurationError(
            f"min_replicas={s.min_replicas} needs a replicated Redis, but no redis_url is set and "
            "the embedded server has no replicas; set redis_url, or use embedded_fsync='always'"
        )
    for name in ("min_replicas_timeout", "reconnect_timeout"):
        if not getattr(s, name) > 0:
            raise ConfigurationError(f"{name} must be > 0 seconds, got {getattr(s, name)!r}")
    if s.embedded_fsync not in ("everysec", "always"):
        raise ConfigurationError(
            f"embedded_fsync must be 'everysec' or 'always', got {s.embedded_fsync!r}"
        )


def _is_parsed_queues(value: Any) -> bool:
    return isinstance(value, tuple) and all(isinstance(v, tuple) for v in value)


def _coerce(name: str, raw: str, annotation: Any) -> Any:
    text = str(annotation)
    try:
        if name == "queues":
            return parse_queues(raw)
        if name == "labels":
            return tuple(x for x in raw.split(",") if x)
        if name in ("stores", "routing_rules"):
            return _json_setting(name, raw, f"CONVEYOR_{name.upper()}")
        if text.startswith("bool"):
            return raw.strip().lower() in ("1", "true", "yes", "on")
        if text.startswith("int"):
            return int(raw)
        if text.startswith("float"):
            return float(raw)
    except ValueError:
        raise ConfigurationError(
            f"environment variable CONVEYOR_{name.upper()}={raw!r} is not a valid {text}"
        ) from None
    return raw or None if text.startswith("str | None") else raw

"""Feature flags stored in Redis (SPEC LIMIT-4): on/off, or on for a percentage of actors.

>>> flags = Flags.of(app)                          # doctest: +SKIP
>>> flags.enable("new_billing")                    # doctest: +SKIP
>>> flags.set_percentage("new_search", 25)         # doctest: +SKIP
>>> flags.enabled("new_search", actor=user_id)     # doctest: +SKIP

Reads are cached per process for ``cache_ttl`` seconds (default 1 s) so a flag checked on every
enqueue costs no round trip; a change made here clears this process's cache at once, other
processes see it within ``cache_ttl``.

One rule everywhere (docs/flags.md): **a flag that was never set is off**. A flag gates new
behaviour: a job class declared with ``feature_flag=`` is enqueued only while its flag is on,
and ``deduplicate(feature_flag=)`` deduplicates only while its flag is on.
"""

from __future__ import annotations

import json
import re
import threading
import zlib
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from conveyor.core._protocols import AppLike
from conveyor.core.extensions import ExtensionKey
from conveyor.core.middleware import ClientMiddleware, EnqueueContext
from conveyor.errors import ConfigurationError, NotFoundError
from conveyor.redis.calls import Call, Plan, run_sync
from conveyor.redis.flags import FlagStore
from conveyor.redis.keys import Keys
from conveyor.routing import DEFAULT_STORE

if TYPE_CHECKING:
    from conveyor.core.app import App
    from conveyor.core.job import Job

NAME = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,127}$")


@dataclass(frozen=True)
class FlagState:
    name: str
    #: On for everyone.
    enabled: bool = False
    #: On for this percentage of actors (0-100) when not enabled for everyone.
    percentage: int = 0
    description: str = ""
    updated_at: float = 0.0

    @property
    def summary(self) -> str:
        if self.enabled:
            return "on"
        return f"{self.percentage}% of actors" if self.percentage else "off"


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise ConfigurationError(
            f"flag name {name!r} is not valid: use lowercase letters, digits, '_', '.', ':' or '-' "
            "(up to 128 characters), e.g. 'new_billing'"
        )
    return name


def actor_bucket(name: str, actor: str | int) -> int:
    """Stable bucket 0-99 of an actor for a flag (the same actor is in or out consistently)."""
    return zlib.crc32(f"{name}:{actor}".encode()) % 100


class Flags:
    """Feature flags of one app (``Flags.of(app)``; kept in ``app.extensions[FLAGS]``)."""

    def __init__(self, app: AppLike, cache_ttl: float = 1.0) -> None:
        self.app = app
        self.cache_ttl = cache_ttl
        self._cache: dict[str, tuple[float, FlagState | None]] = {}
        self._lock = threading.Lock()

    @classmethod
    def of(cls, app: AppLike) -> Flags:
        """The app's shared instance (created on first use)."""
        flags = app.extensions.get(FLAGS)
        if flags is None:
            flags = app.extensions.setdefault(FLAGS, cls(app))
        return flags

    @property
    def _store(self) -> FlagStore:
        # Flags are configuration: one set for every store, kept in the default one.
        return FlagStore(self.app.stores.default)

    def get(self, name: str) -> FlagState | None:
        """The flag's state, or ``None`` if it was never set."""
        return run_sync(lambda: self.app.stores.default, self.get_plan(name))

    def get_plan(self, name: str) -> Plan[FlagState | None]:
        """:meth:`get` as a plan (:mod:`conveyor.redis.calls`), for sync and asyncio callers."""
        now = self.app.clock.monotonic()
        with self._lock:
            hit = self._cache.get(name)
        if hit is not None and now - hit[0] < self.cache_ttl:
            return hit[1]
        # Flags are configuration: one set for every store, kept in the default one.
        flags_key = Keys(self.app.settings.key_prefix).flags
        raw = yield Call.command("HGET", flags_key, name).to(DEFAULT_STORE)
        state = None if raw is None else _decode(name, str(raw))
        with self._lock:
            self._cache[name] = (now, state)
        return state

    def enabled(self, name: str, actor: str | int | None = None) -> bool:
        """Whether ``name`` is on (for ``actor``, when the flag is on for a percentage); a flag
        never set is off."""
        return run_sync(lambda: self.app.stores.default, self.enabled_plan(name, actor))

    def enabled_plan(self, name: str, actor: str | int | None = None) -> Plan[bool]:
        """:meth:`enabled` as a plan."""
        state = yield from self.get_plan(name)
        if state is None:
            return False
        if state.enabled:
            return True
        if state.percentage and actor is not None:
            return actor_bucket(name, actor) < state.percentage
        return False

    def all(self) -> list[FlagState]:
        return sorted(
            (_decode(n, raw) for n, raw in self._store.all().items()), key=lambda s: s.name
        )

    def enable(self, name: str, description: str | None = None) -> FlagState:
        return self._put(name, enabled=True, percentage=0, description=description)

    def disable(self, name: str, description: str | None = None) -> FlagState:
        return self._put(name, enabled=False, percentage=0, description=description)

    def set_percentage(self, name: str, percentage: int) -> FlagState:
        if not isinstance(percentage, int) or not 0 <= percentage <= 100:
            raise ConfigurationError(
                f"percentage for flag {name!r} must be a whole number 0-100, got {percentage!r}"
            )
        return self._put(name, enabled=False, percentage=percentage, description=None)

    def delete(self, name: str) -> None:
        if not self._store.delete(check_name(name)):
            raise NotFoundError(f"no feature flag named {name!r}")
        self._forget(name)

    def _put(
        self, name: str, *, enabled: bool, percentage: int, description: str | None
    ) -> FlagState:
        check_name(name)
        old = self._fresh(name)
        state = FlagState(
            name=name,
            enabled=enabled,
            percentage=percentage,
            description=old.description if description is None and old else description or "",
            updated_at=self.app.clock.time(),
        )
        self._store.put(name, json.dumps({k: v for k, v in asdict(state).items() if k != "name"}))
        self._forget(name)
        return state

    def _fresh(self, name: str) -> FlagState | None:
        raw = self._store.get(name)
        return None if raw is None else _decode(name, raw)

    def _forget(self, name: str) -> None:
        with self._lock:
            self._cache.pop(name, None)


def _decode(name: str, raw: str) -> FlagState:
    try:
        data: dict[str, Any] = json.loads(raw)
        return FlagState(
            name=name,
            enabled=bool(data.get("enabled", False)),
            percentage=int(data.get("percentage", 0)),
            description=str(data.get("description", "")),
            updated_at=float(data.get("updated_at", 0.0)),
        )
    except (ValueError, TypeError, AttributeError):
        return FlagState(name=name)  # unreadable state counts as off


class FlagGateMiddleware(ClientMiddleware):
    """A job class declared with ``feature_flag="name"`` is not enqueued (nor run by cron)
    while that flag is off; the enqueue result says why, so nothing is silently lost."""

    options = frozenset({"feature_flag"})

    def applies_to(self, job_class: type[Job] | None) -> bool:
        return job_class is not None and bool(job_class.conveyor_options.get("feature_flag"))

    def check_option(self, job: str, option: str, value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, str) or not NAME.match(value):
            raise ConfigurationError(
                f"{job}: {option}={value!r} is not a flag name: use lowercase letters, digits, "
                "'_', '.', ':' or '-', e.g. feature_flag=\"new_exporter\""
            )
        return value

    def enqueue_plan(self, contexts: list[EnqueueContext]) -> Plan[None]:
        for ctx in contexts:
            flag = ctx.job_class.conveyor_options.get("feature_flag") if ctx.job_class else None
            if flag and not (yield from Flags.of(ctx.app).enabled_plan(str(flag))):
                ctx.drop(f"feature flag {flag!r} is off")

    def before_enqueue_many(self, contexts: list[EnqueueContext]) -> None:
        if contexts:
            app = contexts[0].app
            run_sync(lambda: app.store, self.enqueue_plan(contexts), app.stores.get)


def install(app: App) -> None:
    app.client_middleware.add(FlagGateMiddleware())


#: The app's :class:`Flags` in ``app.extensions``.
FLAGS: ExtensionKey[Flags] = ExtensionKey("flags")

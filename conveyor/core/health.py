"""Loop health of a worker process: no loop dies silently (SPEC CORE-3, issue #14).

Every loop of a worker (fetch, finish, heartbeat, housekeeping, periodic tasks) runs its
iterations through :func:`run_loop`: an exception is logged with the loop's name, counted and
backed off, and the loop carries on. A loop failing the same way without pause for
``FATAL_AFTER`` iterations (other than for a Redis outage, which a loop waits out) cannot
carry on: the process is told to exit non-zero so its supervisor restarts it. A loop that makes
no progress for its bound is *wedged*; the heartbeat stops then, so the process is recovered
like a dead one. The state of every loop goes into the process hash (``health``).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import redis

from conveyor.clock import Clock
from conveyor.settings import Settings

log = logging.getLogger("conveyor.worker")

#: Consecutive failures (not Redis being unreachable) after which a loop gives up.
FATAL_AFTER = 20
#: Longest back-off between failed iterations.
MAX_BACKOFF = 5.0
#: Exit status of a process whose loop could not carry on or was wedged (EX_SOFTWARE).
EXIT_UNHEALTHY = 70


@dataclass
class LoopState:
    """One loop's health."""

    name: str
    #: Seconds without progress after which the loop counts as wedged (0: never).
    bound: float
    last_progress: float
    errors: int = 0
    consecutive: int = 0
    last_error: str = ""
    running: bool = True
    #: Longest back-off between failed iterations of this loop.
    max_backoff: float = MAX_BACKOFF


class Health:
    """The loops of one process, their errors and their progress.

    >>> health = Health(SYSTEM_CLOCK)                   # doctest: +SKIP
    >>> state = health.register("fetch", bound=60)      # doctest: +SKIP
    >>> health.wedged()                                 # doctest: +SKIP
    []
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.loops: dict[str, LoopState] = {}
        #: Monotonic time of the last Redis error any loop saw (``None``: none yet).
        self.redis_error_at: float | None = None
        self._lock = threading.Lock()

    def register(
        self, name: str, bound: float = 0.0, *, max_backoff: float = MAX_BACKOFF
    ) -> LoopState:
        """A loop to watch; ``bound``: seconds without progress that make it wedged (0:
        never); ``max_backoff``: its longest wait after a failure (the heartbeat must retry
        within its interval, or a live process looks dead once Redis is back)."""
        state = LoopState(name, bound, self.clock.monotonic(), max_backoff=max_backoff)
        with self._lock:
            self.loops[name] = state
        return state

    def progress(self, state: LoopState) -> None:
        state.last_progress = self.clock.monotonic()
        state.consecutive = 0

    def failed(self, state: LoopState, exc: BaseException) -> float:
        """Count and log a failed iteration; returns how long to back off."""
        state.errors += 1
        state.consecutive += 1
        state.last_error = f"{type(exc).__name__}: {str(exc)[:200]}"
        if isinstance(exc, redis.RedisError):
            self.redis_error_at = self.clock.monotonic()
            log.error("%s loop: Redis failed (%s); retrying", state.name, exc)
        else:
            log.error("%s loop failed; carrying on", state.name, exc_info=exc)
        return float(min(state.max_backoff, 0.1 * 2 ** min(state.consecutive, 10)))

    def redis_quiet_for(self) -> float:
        """Seconds since any loop last saw a Redis error (a large number if never)."""
        at = self.redis_error_at
        return 1e9 if at is None else self.clock.monotonic() - at

    def wedged(self) -> list[str]:
        """The loops that made no progress for longer than their bound."""
        now = self.clock.monotonic()
        with self._lock:
            loops = list(self.loops.values())
        return [s.name for s in loops if s.running and s.bound and now - s.last_progress > s.bound]

    def report(self) -> str:
        """The loops' state as JSON, for the process hash (``health`` field).

        >>> Health(SYSTEM_CLOCK).report()                  # doctest: +SKIP
        '{}'
        """
        now = self.clock.monotonic()
        with self._lock:
            loops = list(self.loops.values())
        doc = {
            s.name: {
                "ok": s.consecutive == 0 and not (s.bound and now - s.last_progress > s.bound),
                "errors": s.errors,
                "last_error": s.last_error,
                "idle": round(now - s.last_progress, 1),
                "running": s.running,
            }
            for s in loops
        }
        return json.dumps(doc, separators=(",", ":"))


def run_loop(
    health: Health,
    state: LoopState,
    step: Callable[[], bool],
    stop: threading.Event,
    on_fatal: Callable[[str], None],
) -> None:
    """Run ``step`` until ``stop`` is set or it returns False, surviving anything it raises.

    >>> run_loop(health, health.register("x"), lambda: False, stop, print)  # doctest: +SKIP
    """
    try:
        while not stop.is_set():
            try:
                if not step():
                    break
                health.progress(state)
            except BaseException as exc:
                delay = health.failed(state, exc)
                if state.consecutive >= FATAL_AFTER and not isinstance(exc, redis.RedisError):
                    on_fatal(f"{state.name} loop failed {state.consecutive} times in a row")
                    break
                stop.wait(delay)
    finally:
        state.running = False


class Unhealthy:
    """What a worker process (threads or asyncio) does when one of its loops cannot carry on,
    or one is wedged: it stops, and exits :data:`EXIT_UNHEALTHY` (mixin; the class gives
    ``identity``, ``health``, ``settings``, :meth:`stop` and :meth:`heartbeat`)."""

    identity: str
    health: Health
    exit_code: int
    settings: Settings

    def stop(self) -> None:
        raise NotImplementedError

    def heartbeat(self) -> None:
        raise NotImplementedError

    def fatal(self, reason: str) -> None:
        """A loop cannot carry on: stop and make the process exit non-zero (so a supervisor,
        systemd or Kubernetes restarts it); jobs left behind are recovered as a dead one's."""
        log.critical("worker %s is unhealthy (%s): stopping", self.identity, reason)
        self.exit_code = EXIT_UNHEALTHY
        self.stop()

    def _beat_step(self, stop: threading.Event) -> bool:
        """One heartbeat, unless a loop is wedged: then none ever again, so the process is
        recovered like a dead one."""
        wedged = self.health.wedged()
        if wedged:
            self.fatal(f"no progress in the {', '.join(wedged)} loop(s)")
            return False
        self.heartbeat()
        stop.wait(self.settings.heartbeat_interval)
        return True

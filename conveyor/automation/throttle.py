"""CPU throttling of a node (SPEC AUTO-6) as pure code: feed it CPU samples, ask whether the
node takes tasks.

A node stops taking tasks while its *average* CPU is at or above ``deactive`` and resumes once
the average falls below ``reactive``. The gap between the two is the hysteresis that keeps a
node from flapping around one threshold; the EWMA keeps one busy second from tripping it; and
a minimum dwell time (``meta.cpuAverage.minDwell``) keeps a node in a state for at least that
long after it changed, so a load that swings across both thresholds cannot flip it every few
seconds.

>>> t = Throttle(deactive=60, reactive=40, alpha=1.0)
>>> [t.update(x).value for x in (10, 70, 50, 39)]
['accepting', 'throttled', 'throttled', 'accepting']
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from enum import StrEnum

from conveyor.automation._check import effective_reactive
from conveyor.automation.settings import CpuAverage, Throttling
from conveyor.errors import ConfigurationError

#: A source of CPU samples in percent (0-100), e.g. :func:`psutil_cpu_source`.
SampleSource = Callable[[], float]


class ThrottleState(StrEnum):
    ACCEPTING = "accepting"
    THROTTLED = "throttled"


def resolve_thresholds(deactive: float, reactive: float) -> tuple[float, float]:
    """The thresholds a node uses: ``deactive`` must be in 0-100 (out of range is refused: the
    seed gives no fallback for it, and silently never/always throttling would hide a typo); a
    ``reactive`` above ``deactive`` or outside 0-100 becomes 2/3 of ``deactive``.

    >>> resolve_thresholds(60, 80)
    (60.0, 40.0)
    """
    if not (isinstance(deactive, int | float) and math.isfinite(deactive)) or not (
        0 <= deactive <= 100
    ):
        raise ConfigurationError(f"deactive must be a CPU percentage in 0-100, got {deactive!r}")
    if not (isinstance(reactive, int | float) and math.isfinite(reactive)):
        reactive = -1.0  # not a number at all: out of range, so the 2/3 rule applies
    return float(deactive), float(effective_reactive(deactive, reactive))


def alpha_for(window: float, interval: float = 1.0) -> float:
    """The EWMA weight whose centre of mass matches a ``window`` of seconds sampled every
    ``interval`` seconds: ``2 / (N + 1)`` with ``N = window / interval`` samples.

    >>> alpha_for(9)
    0.2
    """
    if window <= 0 or interval <= 0:
        raise ConfigurationError(
            f"window and interval must be > 0, got window={window!r}, interval={interval!r}"
        )
    return 2.0 / (max(window / interval, 1.0) + 1.0)


class Ewma:
    """Exponentially weighted moving average; the first sample seeds it.

    >>> e = Ewma(0.5); e.add(10); e.add(20)
    10.0
    15.0
    """

    def __init__(self, alpha: float) -> None:
        if not 0 < alpha <= 1:
            raise ConfigurationError(f"alpha must be in (0, 1], got {alpha!r}")
        self.alpha = alpha
        self.value: float | None = None

    def add(self, sample: float) -> float:
        if self.value is None:
            self.value = float(sample)
        else:
            self.value += self.alpha * (sample - self.value)
        return self.value


class Throttle:
    """Whether this node takes workflow tasks, from its average CPU.

    ``update(sample)`` feeds one sample (percent) and returns the state; ``poll()`` reads one
    from the injected ``source``. ``enabled=False`` (``throttling.enable: false``) always
    accepts but still tracks the average, so it can be shown.
    """

    def __init__(
        self,
        deactive: float = 60.0,
        reactive: float = 40.0,
        *,
        alpha: float | None = None,
        window: float = 10.0,
        interval: float = 1.0,
        enabled: bool = True,
        source: SampleSource | None = None,
        min_dwell: float = 0.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.deactive, self.reactive = resolve_thresholds(deactive, reactive)
        if not (math.isfinite(min_dwell) and min_dwell >= 0):
            raise ConfigurationError(f"min_dwell must be 0 or more seconds, got {min_dwell!r}")
        self.enabled = enabled
        self.source = source
        #: Seconds the state holds after a change before it may change again.
        self.min_dwell = float(min_dwell)
        self._monotonic = monotonic
        self._changed_at: float | None = None
        self._ewma = Ewma(alpha if alpha is not None else alpha_for(window, interval))
        self._state = ThrottleState.ACCEPTING
        #: How many times the state changed (for status pages and flapping tests).
        self.transitions = 0

    @classmethod
    def from_settings(
        cls,
        throttling: Throttling,
        average: CpuAverage | None = None,
        source: SampleSource | None = None,
    ) -> Throttle:
        """A throttle for a workflow's ``throttling`` and the global ``meta.cpuAverage``."""
        average = average or CpuAverage()
        return cls(
            throttling.cpu.deactive,
            throttling.cpu.reactive,
            alpha=average.effective_alpha,
            enabled=throttling.enable,
            source=source,
            min_dwell=average.min_dwell,
        )

    @property
    def state(self) -> ThrottleState:
        return ThrottleState.ACCEPTING if not self.enabled else self._state

    @property
    def accepting(self) -> bool:
        return self.state is ThrottleState.ACCEPTING

    @property
    def average(self) -> float | None:
        """The current CPU average, ``None`` before the first sample."""
        return self._ewma.value

    def update(self, sample: float) -> ThrottleState:
        """Add one CPU sample (clamped to 0-100) and return the resulting state."""
        if not isinstance(sample, int | float) or not math.isfinite(sample):
            raise ValueError(f"a CPU sample must be a finite number, got {sample!r}")
        avg = self._ewma.add(min(max(float(sample), 0.0), 100.0))
        if self._state is ThrottleState.ACCEPTING:
            wanted = ThrottleState.THROTTLED if avg >= self.deactive else self._state
        else:
            wanted = ThrottleState.ACCEPTING if avg < self.reactive else self._state
        if wanted is not self._state and self._dwelt():
            self._state = wanted
            self._changed_at = self._monotonic()
            self.transitions += 1
        return self.state

    def _dwelt(self) -> bool:
        """Whether the current state has lasted ``min_dwell`` (the first change is free)."""
        if self._changed_at is None or self.min_dwell <= 0:
            return True
        return self._monotonic() - self._changed_at >= self.min_dwell

    def poll(self) -> ThrottleState:
        """Read one sample from ``source`` and :meth:`update` with it."""
        if self.source is None:
            raise ConfigurationError("this Throttle has no sample source; pass source=...")
        return self.update(self.source())

    def snapshot(self) -> dict[str, object]:
        """The state as JSON-native values (for the API and ``conveyor automation nodes``)."""
        return {
            "state": self.state.value,
            "enabled": self.enabled,
            "average": None if self.average is None else round(self.average, 2),
            "deactive": self.deactive,
            "reactive": self.reactive,
            "min_dwell": self.min_dwell,
        }


def psutil_cpu_source() -> SampleSource:
    """A sample source reading the machine's CPU % since the previous call (psutil)."""
    import psutil

    psutil.cpu_percent(interval=None)  # the first call only sets the baseline
    return lambda: float(psutil.cpu_percent(interval=None))

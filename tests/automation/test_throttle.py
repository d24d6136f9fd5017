from __future__ import annotations

import itertools
import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.automation import (
    CpuAverage,
    Ewma,
    Throttle,
    ThrottleState,
    Throttling,
    alpha_for,
    resolve_thresholds,
)
from conveyor.automation.settings import CpuThrottling
from conveyor.clock import FakeClock
from conveyor.errors import ConfigurationError

A, T = ThrottleState.ACCEPTING, ThrottleState.THROTTLED


def feed(t: Throttle, samples: list[float]) -> list[ThrottleState]:
    return [t.update(x) for x in samples]


def test_stops_at_or_above_deactive_and_resumes_only_below_reactive() -> None:
    t = Throttle(60, 40, alpha=1.0)  # alpha 1: the average is the last sample
    assert feed(t, [59.9, 60]) == [A, T]
    assert not t.accepting
    assert feed(t, [59, 45, 40]) == [T, T, T]  # between the thresholds, and exactly reactive
    assert feed(t, [39.9]) == [A]
    assert feed(t, [59, 41]) == [A, A]  # below deactive again: still accepting
    assert t.transitions == 2


def test_the_average_not_a_spike_decides() -> None:
    t = Throttle(60, 40, window=10)  # EWMA over ~10 samples
    feed(t, [20] * 20)
    assert feed(t, [100, 100]) == [A, A]  # two busy seconds do not stop the node
    states = feed(t, [100] * 20)
    assert states[-1] is T
    first = states.index(T)
    assert 0 < first < 10
    # back to idle: it resumes once the average, not the sample, falls below 40
    states = feed(t, [0] * 20)
    assert states[0] is T and states[-1] is A
    assert t.average is not None and t.average < 40


def test_noisy_load_around_deactive_does_not_flap() -> None:
    rng = random.Random(6)
    t = Throttle(60, 40, window=10)
    # 500 samples of 60 +/- 20: the average hovers around deactive all the time
    feed(t, [min(100.0, max(0.0, rng.gauss(60, 20))) for _ in range(500)])
    assert t.transitions == 1  # stopped once, and stays stopped: the load never fell
    # without hysteresis (reactive == deactive) the same load flips state again and again
    rng = random.Random(6)
    flappy = Throttle(60, 60, window=10)
    feed(flappy, [min(100.0, max(0.0, rng.gauss(60, 20))) for _ in range(500)])
    assert flappy.transitions > 50


def test_square_wave_load_changes_state_once_per_phase() -> None:
    t = Throttle(60, 40, window=5)
    wave = list(itertools.chain.from_iterable([[95] * 30, [5] * 30] * 5))
    feed(t, wave)
    assert t.transitions == 10


def test_disabled_throttle_always_accepts_but_tracks_the_average() -> None:
    t = Throttle.from_settings(Throttling(enable=False), CpuAverage(alpha=1.0))
    assert feed(t, [100, 100]) == [A, A] and t.accepting
    assert t.snapshot() == {
        "state": "accepting",
        "enabled": False,
        "average": 100.0,
        "deactive": 60.0,
        "reactive": 40.0,
        "min_dwell": 15.0,
    }


def test_injected_sample_source() -> None:
    samples = iter([10.0, 90.0, 90.0, 10.0])
    t = Throttle(50, 30, alpha=1.0, source=lambda: next(samples))
    assert [t.poll() for _ in range(4)] == [A, T, T, A]
    with pytest.raises(ConfigurationError, match="no sample source"):
        Throttle().poll()


def test_from_settings_uses_thresholds_and_the_global_basis() -> None:
    t = Throttle.from_settings(
        Throttling(cpu=CpuThrottling(deactive=80, reactive=20)), CpuAverage(interval=1, window=9)
    )
    assert (t.deactive, t.reactive) == (80, 20)
    t.update(0)
    t.update(100)
    assert t.average == pytest.approx(20.0)  # alpha 0.2


@pytest.mark.parametrize(
    ("deactive", "reactive", "expected"),
    [
        (60, 40, (60, 40)),
        (60, 60, (60, 60)),
        (60, 61, (60, 40)),
        (60, -1, (60, 40)),
        (60, 101, (60, 40)),
        (90, math.nan, (90, 60)),
        (0, 0, (0, 0)),
        (100, 100, (100, 100)),
    ],
)
def test_threshold_rules(deactive: float, reactive: float, expected: tuple[float, float]) -> None:
    assert resolve_thresholds(deactive, reactive) == expected


@pytest.mark.parametrize("deactive", [-0.1, 100.5, math.inf, math.nan])
def test_deactive_out_of_range_is_refused(deactive: float) -> None:
    with pytest.raises(ConfigurationError, match="deactive"):
        Throttle(deactive, 40)


def test_samples_are_clamped_and_must_be_numbers() -> None:
    t = Throttle(60, 40, alpha=1.0)
    t.update(250)
    assert t.average == 100 and not t.accepting
    t.update(-20)
    assert t.average == 0 and t.accepting
    with pytest.raises(ValueError, match="finite"):
        t.update(math.nan)


def test_averaging_basis() -> None:
    assert alpha_for(9) == pytest.approx(0.2)
    assert alpha_for(10, interval=5) == pytest.approx(2 / 3)
    assert alpha_for(0.5) == 1.0  # a window shorter than one sample: no smoothing
    for bad in (0, -1):
        with pytest.raises(ConfigurationError):
            alpha_for(bad)
    with pytest.raises(ConfigurationError):
        Ewma(0)
    e = Ewma(0.5)
    assert [e.add(x) for x in (10, 20, 20)] == [10.0, 15.0, 17.5]


@given(
    st.floats(0, 100),
    st.floats(-50, 150),
    st.lists(st.floats(0, 100), max_size=200),
    st.floats(0.01, 1.0),
)
def test_state_always_matches_the_hysteresis_rule(
    deactive: float, reactive: float, samples: list[float], alpha: float
) -> None:
    t = Throttle(deactive, reactive, alpha=alpha)
    assert 0 <= t.reactive <= t.deactive
    for x in samples:
        before = t.state
        after = t.update(x)
        avg = t.average
        assert avg is not None and 0 <= avg <= 100
        if after is not before:  # a change happens only across a threshold
            assert (after is T and avg >= t.deactive) or (after is A and avg < t.reactive)
        elif before is A:
            assert avg < t.deactive
        else:
            assert avg >= t.reactive


def test_min_dwell_holds_a_state_after_a_change() -> None:
    """A load swinging across both thresholds every few seconds flips a node at most once per
    dwell time (issue #16: a node flipped 7 times a minute)."""
    clock = FakeClock()
    t = Throttle(60, 40, alpha=1.0, min_dwell=15, monotonic=clock.monotonic)
    flips = []
    for second in range(60):
        sample = 90.0 if (second // 3) % 2 == 0 else 10.0  # 3 s busy, 3 s idle
        before = t.state
        t.update(sample)
        if t.state is not before:
            flips.append(second)
        clock.advance(1)
    # Without the dwell this load flips 20 times; with 15 s at most once per 15 s.
    assert flips[0] == 0  # the first change is not held back
    assert all(b - a >= 15 for a, b in itertools.pairwise(flips)), flips
    assert 2 <= len(flips) <= 4
    free = Throttle(60, 40, alpha=1.0, min_dwell=0, monotonic=clock.monotonic)
    assert [free.update(x) for x in (90, 10, 90, 10)] == [T, A, T, A]
    with pytest.raises(ConfigurationError, match="min_dwell"):
        Throttle(min_dwell=-1)

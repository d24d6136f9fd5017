"""The fetched jobs of a process: fetch order, suspects alone, the start boundary's permits,
liveness before a start, and jobs revoked after the process was taken for dead."""

from __future__ import annotations

import threading

from conveyor.clock import FakeClock
from conveyor.core.middleware import FetchedJob
from conveyor.core.recovery import started_flags
from conveyor.core.units import HANDOFF_BACKOFF, NO_BOUNDARY, STARTED_UP_TO, Units, refill_for


def unit(raw: str, interrupted: int = 0) -> FetchedJob:
    job = {"class": "A", "args": [], "interrupted_count": interrupted}
    return FetchedJob("default", raw, job, None)


def units(concurrency: int = 2) -> tuple[Units, FakeClock]:
    clock = FakeClock()
    u = Units(4, 2, concurrency=concurrency, clock=clock)
    u.alive_until(clock.monotonic() + 15)
    return u, clock


def in_thread(target: object) -> tuple[threading.Thread, list[object]]:
    out: list[object] = []
    thread = threading.Thread(target=lambda: out.append(target()), daemon=True)  # type: ignore[operator]
    thread.start()
    return thread, out


def test_a_job_past_the_published_boundary_waits_for_a_publication() -> None:
    u, _ = units()
    wanted: list[int] = []
    u.on_wanted = lambda: wanted.append(1)
    u.add([unit("a"), unit("b"), unit("c")])
    u.request()  # what the fetcher does after a batch
    assert wanted and u.wanted
    first = u.take()
    assert first is not None and u.may_start(first[0], "a")  # nothing published yet: all may
    with u.publishing() as pub:  # the acknowledgement that follows
        assert pub.for_finish(slack=0) == "b"  # the oldest job still waiting
    second = u.take()
    assert second is not None
    thread, out = in_thread(lambda: u.may_start(second[0], "b"))
    thread.join(0.3)
    assert thread.is_alive(), "b was published as not started: it waits for a publication"
    with u.publishing() as pub:
        assert pub.for_finish(slack=0) == "c"
    thread.join(5)
    assert out == [True]


def test_a_publication_under_way_already_holds_back_the_jobs_it_names() -> None:
    u, _ = units()
    u.add([unit("a"), unit("b")])
    with u.publishing() as pub:
        assert pub.for_finish(slack=1) == "b"
        first = u.take()
        assert first is not None and u.may_start(first[0], "a")
        second = u.take()
        assert second is not None
        thread, out = in_thread(lambda: u.may_start(second[0], "b"))
        thread.join(0.3)
        assert thread.is_alive(), "Redis may already say b has not started"
    u.request()
    with u.publishing() as pub:
        assert pub.for_finish(slack=0) == ""
    thread.join(5)
    assert out == [True] and u._confirmed == NO_BOUNDARY


def test_no_job_starts_once_the_liveness_known_has_lapsed() -> None:
    u, clock = units()
    u.add([unit("a")])
    taken = u.take()
    assert taken is not None
    clock.advance(16)  # no heartbeat for longer than the liveness TTL (SIGSTOP, a pause)
    thread, out = in_thread(lambda: u.may_start(taken[0], "a"))
    thread.join(0.3)
    assert thread.is_alive(), "it must wait for a heartbeat"
    u.discard_missing([])  # the heartbeat found "a" recovered elsewhere
    u.alive_until(clock.monotonic() + 15)
    thread.join(5)
    assert out == [False], "a job recovered by another process is not run here too"


def test_discard_missing_drops_waiting_jobs_recovered_elsewhere() -> None:
    u, _ = units()
    u.add([unit("a"), unit("b"), unit("c")])
    dropped = u.discard_missing(["b"])
    assert [d.raw for d in dropped] == ["a", "c"]
    taken = u.take()
    assert taken is not None and taken[1].raw == "b"


def test_a_suspect_runs_alone() -> None:
    u, _ = units(concurrency=3)
    u.add([unit("x"), unit("poison", interrupted=1), unit("y")])
    first = u.take()
    assert first is not None and first[1].raw == "x"
    thread, out = in_thread(u.take)
    thread.join(0.3)
    assert thread.is_alive(), "the suspect waits until nothing else runs"
    u.done(first[0])
    thread.join(5)
    assert out and out[0][1].raw == "poison"  # type: ignore[index]
    other, later = in_thread(u.take)
    other.join(0.3)
    assert other.is_alive(), "and nothing starts while it runs"
    u.done(out[0][0])  # type: ignore[index]
    other.join(5)
    assert later and later[0][1].raw == "y"  # type: ignore[index]


def test_held_entries_and_orphans() -> None:
    u, _ = units()
    u.hold(["a", "b"])
    unheld, fetching = u.unheld(["a", "b", "lost", "lost"])
    assert unheld == {"lost": 2} and fetching is None
    u.release_held(["a"])
    assert u.unheld(["a"])[0] == {"a": 1}


def test_an_adaptive_prefetch_follows_the_run_time_of_the_jobs() -> None:
    clock = FakeClock()
    u = Units(2, 1, concurrency=1, clock=clock, adaptive=True)
    fixed = Units(2, 1, concurrency=1, clock=clock)
    for each in (u, fixed):
        each.add([unit("a")])
        taken = each.take()
        assert taken is not None
        each.done(taken[0], 0.0002)  # a 0.2 ms job: 20 ms of work is 100 jobs
    assert (u.limit, u.refill) == (101, 75)
    assert (fixed.limit, fixed.refill) == (2, 1), "a prefetch set by the user never moves"
    for _ in range(50):  # jobs turned slow (0.2 s): the prefetch shrinks back near its floor
        u.add([unit("s")])
        taken = u.take()
        assert taken is not None
        u.done(taken[0], 0.2)
    # (it shrinks only once jobs got 3x slower than it was sized for: no flapping)
    assert 2 <= u.limit <= 3 and u.refill == refill_for(u.limit, 1)


def test_surplus_hands_back_the_newest_untaken_jobs_and_no_thread_runs_them() -> None:
    clock = FakeClock()
    u = Units(2, 1, concurrency=1, clock=clock, adaptive=True)
    u.alive_until(clock.monotonic() + 15)
    assert u.surplus() == [], "nothing beyond the prefetch"
    u.add([unit("warm")])
    warm = u.take()
    assert warm is not None
    u.done(warm[0], 0.0002)
    assert u.limit == 101
    u.add([unit(f"j{i}") for i in range(40)])
    first = u.take()
    assert first is not None and first[1].raw == "j0"
    assert u.surplus() == [], "within the prefetch"
    u.done(first[0], 0.5)  # one slow job: the average jumps, the prefetch shrinks
    assert u.limit < 40
    back = u.surplus()
    kept = 39 - len(back)
    assert kept == u.limit - u.concurrency
    assert [b.raw for b in back] == [f"j{i}" for i in range(1 + kept, 40)], "newest, in order"
    taken = [u.take() for _ in range(kept)]
    assert [t[1].raw for t in taken if t is not None] == [f"j{i}" for i in range(1, 1 + kept)]
    u.release(1)
    assert u.take() is None, "the jobs handed back are never handed to a thread"


def test_a_suspect_starts_only_once_the_jobs_behind_it_are_published_as_not_started() -> None:
    u, _ = units(concurrency=2)
    wanted: list[int] = []
    u.on_wanted = lambda: wanted.append(1)
    u.eager = True  # jobs are short: every waiting job would be permitted ahead
    u.add([unit("poison", interrupted=1), unit("a"), unit("b")])
    assert wanted and u.wanted, "a publication is asked for before the suspect runs"
    taken = u.take()
    assert taken is not None and taken[1].raw == "poison"
    thread, out = in_thread(lambda: u.may_start(taken[0], "poison"))
    thread.join(0.3)
    assert thread.is_alive(), "it waits for the publication"
    with u.publishing() as publication:
        assert publication.for_finish(slack=u.limit) == "a", "the jobs behind it: not started"
    thread.join(5)
    assert out == [True]


def test_a_suspect_with_nothing_behind_it_leaves_jobs_fetched_later_unstarted() -> None:
    # "No boundary" would count every job of the working list as started, so jobs fetched
    # while the suspect runs would be counted as interrupted by its crash, never having run.
    u, _ = units(concurrency=2)
    u.eager = True
    u.add([unit("poison", interrupted=1)])
    taken = u.take()
    assert taken is not None
    with u.publishing() as publication:
        boundary = publication.for_finish(slack=u.limit)
    assert boundary == STARTED_UP_TO + "poison"
    assert u.may_start(taken[0], "poison")
    u.add([unit("later")])  # fetched while the suspect runs
    assert started_flags(["later", "poison", "older"], boundary) == [False, True, True]
    u.done(taken[0], 0.01)
    later = u.take()
    assert later is not None
    thread, out = in_thread(lambda: u.may_start(later[0], "later"))
    thread.join(0.3)
    assert thread.is_alive(), "a job fetched later waits for a publication naming it"
    with u.publishing() as publication:
        publication.for_finish(slack=u.limit)
    thread.join(5)
    assert out == [True]


def test_a_hand_off_halves_the_prefetch_and_keeps_it_from_growing_for_a_while() -> None:
    """A concurrency limit deferred a fetched job, or a job took a scarce slot: the jobs held
    ahead take slots that running jobs need, so the prefetch halves (down to its floor, once
    per prefetch's worth of jobs fetched) and does not grow again for HANDOFF_BACKOFF."""
    clock = FakeClock()
    u = Units(20, 10, concurrency=10, clock=clock, adaptive=True)
    u.alive_until(clock.monotonic() + 1000)

    def run_one(raw: str) -> None:
        u.add([unit(raw)])
        taken = u.take()
        assert taken is not None
        u.done(taken[0], 0.0002)

    run_one("fast")
    assert u.limit == 110
    u.add([unit("a"), None, unit("b")])  # None: a job a middleware handed off
    assert (u.limit, u.refill) == (60, 45), "prefetch 100 -> 50"
    for _ in range(2):
        taken = u.take()
        assert taken is not None
        u.done(taken[0], 0.0002)
    run_one("still fast")
    assert u.limit == 60, "no growth during the back-off"
    u.add([None])  # fetched under the old size: it does not halve the prefetch again
    assert u.limit == 60
    for size, limit in ((50, 35), (25, 22), (12, 20)):  # once that many more were fetched
        u.add([None] * size)
        assert u.limit == limit
    assert u.refill == 10, "50 -> 25 -> 12 -> its floor of 10"
    clock.advance(HANDOFF_BACKOFF + 1)
    for _ in range(16):  # short jobs are sized again every 16th job (resize_due)
        run_one("later")
    assert u.limit == 110
    limited = unit("limited")
    limited.holds_slot = True  # it took a scarce concurrency slot: less holding ahead too
    u.add([limited])
    assert u.limit == 60


def test_a_suspect_that_comes_up_during_a_publication_waits_for_the_next_one() -> None:
    u, _ = units(concurrency=2)
    u.eager = True
    u.add([unit("a")])
    first = u.take()
    assert first is not None and u.may_start(first[0], "a")
    with u.publishing() as publication:
        assert publication.for_finish(slack=u.limit) == "", "captured before any suspect"
        u.add([unit("poison", interrupted=1), unit("b")])
        u.done(first[0])  # nothing runs now: the suspect comes up mid-publication
    taken = u.take()
    assert taken is not None and taken[1].raw == "poison"
    thread, out = in_thread(lambda: u.may_start(taken[0], "poison"))
    thread.join(0.3)
    assert thread.is_alive(), "that publication did not name the jobs behind it"
    assert u.wanted
    with u.publishing() as publication:
        assert publication.for_finish(slack=u.limit) == "b"
    thread.join(5)
    assert out == [True]

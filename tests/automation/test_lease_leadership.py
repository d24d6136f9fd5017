"""Leadership over a real file lease, with an injected clock: when it renews, when it stops
trusting a term (with no tick needed), takeover by another node, resignation, a failing
backend."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from conveyor.automation.lease import FileLease, Leadership, Term
from conveyor.clock import FakeClock
from conveyor.errors import LeaseError

TERM = 300.0
MARGIN = 60.0  # the default: TERM / 5


def _node(tmp_path: Path, clock: FakeClock, holder: str, **kw: float) -> Leadership:
    return Leadership(FileLease(tmp_path / "wf.txt", clock=clock), holder, clock=clock, **kw)


def test_first_tick_acquires_and_current_reports_it(tmp_path: Path) -> None:
    clock = FakeClock(1_000.0)
    node = _node(tmp_path, clock, "node-a", term=TERM)
    assert node.current() is None and node.remaining() == 0
    term = node.tick()
    assert term == Term("node-a", 1, 1_000.0 + TERM)
    assert node.current() == term
    assert node.margin == MARGIN and node.remaining() == TERM - MARGIN


def test_renews_once_a_third_of_the_term_has_passed(tmp_path: Path) -> None:
    clock = FakeClock(1_000.0)
    node = _node(tmp_path, clock, "node-a", term=TERM)
    first = node.tick()
    assert first is not None
    clock.advance(TERM / 3 - 1)
    assert node.tick() == first  # not yet: the file still says the first expiry
    assert node.lease.peek() == first
    clock.advance(1)
    renewed = node.tick()
    assert renewed == Term("node-a", 1, 1_000.0 + TERM / 3 + TERM)
    assert node.lease.peek() == renewed
    # The next renewal counts from this one.
    clock.advance(TERM / 3 - 1)
    assert node.tick() == renewed
    clock.advance(1)
    third = node.tick()
    assert third is not None and third.expires_at == renewed.expires_at + TERM / 3


def test_past_the_deadline_current_is_none_without_a_tick(tmp_path: Path) -> None:
    clock = FakeClock()
    node = _node(tmp_path, clock, "node-a", term=TERM)
    term = node.tick()
    clock.advance(TERM - MARGIN - 0.001)
    assert node.current() == term  # just before the deadline
    clock.advance(0.001)
    assert node.current() is None  # the deadline: call start + term - margin
    assert node.remaining() == 0
    # The lease itself has not expired (nobody else took it): a tick takes the same term back.
    clock.advance(1)
    back = node.tick()
    assert back is not None and back.fence == 1


def test_a_paused_holder_wakes_up_to_a_new_master(tmp_path: Path) -> None:
    clock = FakeClock()
    a = _node(tmp_path, clock, "node-a", term=TERM)
    b = _node(tmp_path, clock, "node-b", term=TERM)
    old = a.tick()
    assert old is not None and b.tick() is None
    clock.advance(TERM + 1)  # node-a is paused past its whole term
    new = b.tick()
    assert new is not None and new.holder == "node-b" and new.fence == old.fence + 1
    assert a.current() is None  # on waking, before any tick
    assert a.tick() is None  # its renew fails (lost) and so does acquiring
    assert b.current() == new


def test_the_deadline_counts_from_when_the_call_started(tmp_path: Path) -> None:
    """A slow acquire eats into the term: the deadline is start + term - margin, not end."""
    clock = FakeClock()

    class SlowLease(FileLease):
        def acquire(self, holder: str, ttl: float) -> Term | None:
            clock.advance(10)
            return super().acquire(holder, ttl)

    node = Leadership(SlowLease(tmp_path / "wf.txt", clock=clock), "node-a", term=TERM, clock=clock)
    assert node.tick() is not None
    assert node.remaining() == TERM - MARGIN - 10


def test_resign_releases_for_the_next_node(tmp_path: Path) -> None:
    clock = FakeClock()
    a = _node(tmp_path, clock, "node-a", term=TERM)
    b = _node(tmp_path, clock, "node-b", term=TERM)
    old = a.tick()
    assert old is not None
    a.resign()
    a.resign()
    assert a.current() is None
    new = b.tick()
    assert new is not None and new.fence == old.fence + 1


def test_a_failing_backend_is_logged_and_the_term_lapses_at_its_deadline(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    node = _node(tmp_path, clock, "node-a", term=TERM)
    term = node.tick()
    lock = tmp_path / "wf.txt.lock"
    lock.unlink()
    lock.mkdir()  # the lock file can no longer be opened: every lease call fails
    clock.advance(TERM / 3)
    with caplog.at_level(logging.WARNING, logger="conveyor.automation.lease"):
        assert node.tick() == term  # renew failed, but the term is still trusted
    assert "cannot open the lock file" in caplog.text
    clock.advance(TERM - MARGIN - TERM / 3)
    assert node.tick() is None


@pytest.mark.parametrize("margin", [-1.0, 200.0, 300.0])
def test_margin_must_leave_room_for_the_renewal(tmp_path: Path, margin: float) -> None:
    with pytest.raises(LeaseError, match=f"margin {margin!r} must be at least 0"):
        Leadership(FileLease(tmp_path / "wf.txt"), "node-a", term=TERM, margin=margin)


def test_short_terms_get_a_minimum_margin(tmp_path: Path) -> None:
    assert Leadership(FileLease(tmp_path / "wf.txt"), "n", term=0.1).margin == 0.05
    assert Leadership(FileLease(tmp_path / "wf.txt"), "n", term=10, margin=0).margin == 0


def test_current_does_not_wait_for_a_slow_lease_call(tmp_path: Path) -> None:
    """current() is read under its own lock, never behind a tick stuck in I/O."""
    clock = FakeClock()
    entered, leave = threading.Event(), threading.Event()

    class StuckLease(FileLease):
        def renew(self, term: Term, ttl: float) -> Term | None:
            entered.set()
            leave.wait(30)
            return super().renew(term, ttl)

    node = Leadership(StuckLease(tmp_path / "wf.txt", clock=clock), "node-a", clock=clock)
    term = node.tick()
    clock.advance(TERM / 3)
    ticker = threading.Thread(target=node.tick)
    ticker.start()
    assert entered.wait(30)
    assert node.current() == term  # answered while the renewal is in flight
    leave.set()
    ticker.join(30)
    assert node.current() is not None and node.current().expires_at > term.expires_at  # type: ignore[union-attr]

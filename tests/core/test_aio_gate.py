"""The asyncio worker's start gate (conveyor/core/aio_gate.py): which jobs may start, and the
start boundary each acknowledgement publishes. Plain asyncio, no Redis (the worker's tests
cover the real process and the boundary in Redis)."""

from __future__ import annotations

import asyncio
import json
import time

from conveyor.core.aio_gate import EVERY_JOB, StartGate
from conveyor.core.middleware import FetchedJob
from conveyor.core.recovery import started_flags
from conveyor.core.units import NO_BOUNDARY, STARTED_UP_TO


def unit(i: int, interrupted: int = 0) -> FetchedJob:
    job = {"class": "J", "args": [i], "jid": f"j{i}", "queue": "default"}
    if interrupted:
        job["interrupted_count"] = interrupted
    return FetchedJob("default", json.dumps(job), job, None)


async def nothing() -> None:
    return None


def recording_publications(gate: StartGate) -> list[str]:
    """Make ``gate`` publish as a finisher does (every waiting job permitted, the call taken
    at once); the boundaries published, in order, are appended to the list returned."""
    published: list[str] = []

    async def publish() -> None:
        seq, raw = gate.capture(slack=EVERY_JOB)
        published.append(raw)
        gate.confirm(seq)

    gate._publish = publish
    return published


def test_jobs_start_at_once_until_a_boundary_names_them_then_wait_for_the_next() -> None:
    async def main() -> None:
        gate = StartGate(nothing)
        units = [unit(i) for i in range(6)]
        for u in units:
            gate.added(u)
        # No boundary published: every job may start (a crash would count them all).
        assert not gate.slow(0, units[0])
        gate.started(units[0])
        gate.request()
        assert gate.wanted, "a fetched batch asks for a publication"
        seq, raw = gate.capture(slack=0)
        assert (seq, json.loads(raw)["args"]) == (1, [1]), "the oldest job no slot took"
        assert gate.slow(1, units[1]), "named as not started: it waits from the capture"
        admitted = asyncio.ensure_future(gate.admit(1, units[1]))
        await asyncio.sleep(0)
        assert not admitted.done()
        gate.confirm(seq)
        assert gate.wanted, "a job waiting to start asked for the next publication"
        # The next capture skips the job a slot took (else it would wait for ever) and
        # permits as many jobs ahead as the slack.
        seq, raw = gate.capture(slack=2)
        assert json.loads(raw)["args"] == [4]
        gate.confirm(seq)
        assert await asyncio.wait_for(admitted, 1) == "start"
        gate.started(units[1])
        assert not gate.slow(3, units[3]) and gate.slow(4, units[4])

    asyncio.run(main())


def test_a_failed_publication_lets_nothing_start_until_the_next_one() -> None:
    async def main() -> None:
        gate = StartGate(nothing)
        u = unit(0)
        gate.added(u)
        gate.capture(slack=EVERY_JOB)
        gate.failed()
        assert gate.slow(0, u) and gate.wanted
        assert gate.capture(slack=EVERY_JOB) == (NO_BOUNDARY, "")
        gate.confirm(NO_BOUNDARY)
        assert not gate.slow(0, u)

    asyncio.run(main())


def test_short_jobs_make_publications_permit_every_job_and_fetches_ask_for_none() -> None:
    async def main() -> None:
        gate = StartGate(nothing)
        units = [unit(i) for i in range(3)]
        for u in units:
            gate.added(u)
        gate.started(units[0])
        gate.finished(0, 0.001)
        assert gate.short
        gate.eager = True  # what the finisher sets from ``short`` at its next acknowledgement
        gate.request()
        assert not gate.wanted
        assert gate.capture(slack=EVERY_JOB) == (NO_BOUNDARY, "")

    asyncio.run(main())


def test_a_suspect_starts_alone_after_a_publication_naming_the_jobs_behind_it() -> None:
    async def main() -> None:
        gate = StartGate(nothing)
        published = recording_publications(gate)
        before, suspect, behind = unit(0), unit(1, interrupted=1), unit(2)
        for u in (before, suspect, behind):
            gate.added(u)
        gate.started(before)
        assert gate.slow(1, suspect)
        admitted = asyncio.ensure_future(gate.admit(1, suspect))
        await asyncio.sleep(0)
        assert not admitted.done(), "it waits until nothing else runs"
        gate.finished(0, 0.01)
        assert await asyncio.wait_for(admitted, 1) == "start"
        assert [json.loads(raw)["jid"] if raw else "" for raw in published] == ["j2"], (
            "the job behind it is named as not started"
        )
        gate.started(suspect)
        assert gate.slow(2, behind), "nothing starts beside it"
        waiting = asyncio.ensure_future(gate.admit(2, behind))
        await asyncio.sleep(0)
        assert not waiting.done()
        gate.finished(1, 0.5)
        assert gate.wanted, "its end asks for a publication that permits the jobs behind it"
        await gate._publish()
        assert await asyncio.wait_for(waiting, 1) == "start"

    asyncio.run(main())


def test_a_suspect_with_nothing_behind_it_leaves_jobs_fetched_later_unstarted() -> None:
    # See tests/core/test_units.py's twin: "no boundary" would count jobs fetched while the
    # suspect runs as started.
    async def main() -> None:
        gate = StartGate(nothing)
        published = recording_publications(gate)
        suspect = unit(0, interrupted=1)
        gate.added(suspect)
        assert await asyncio.wait_for(gate.admit(0, suspect), 1) == "start"
        assert published == [STARTED_UP_TO + suspect.raw]
        gate.started(suspect)
        later = unit(1)
        gate.added(later)  # fetched while the suspect runs
        flags = started_flags([later.raw, suspect.raw], published[0])
        assert flags == [False, True], "only the suspect may have started"
        gate.finished(0, 0.01)
        assert gate.slow(1, later), "a job fetched later waits for a publication naming it"

    asyncio.run(main())


def test_past_the_liveness_ttl_nothing_starts_and_jobs_recovered_elsewhere_are_dropped() -> None:
    async def main() -> None:
        gate = StartGate(nothing)
        units = [unit(i) for i in range(3)]
        for u in units:
            gate.added(u)
        gate.alive_until(time.monotonic() - 1)  # the last heartbeat is older than the TTL
        assert gate.slow(0, units[0])
        taken = asyncio.ensure_future(gate.admit(0, units[0]))
        await asyncio.sleep(0)
        assert not taken.done(), "no job starts before a heartbeat"
        # The heartbeat found the liveness key gone: jobs 0 and 2 were recovered elsewhere.
        gone = gate.revoke([units[1].raw])
        assert gone == [units[0], units[2]]
        gate.dropped(units[2])  # the worker takes it out of its queue
        gate.alive_until(time.monotonic() + 60)
        assert await asyncio.wait_for(taken, 1) == "drop", "the slot forgets it, no requeue"
        assert not gate.slow(1, units[1]), "the job still ours starts"

    asyncio.run(main())

"""One contract for the three lease backends (file, aws-s3 against moto's S3 server, redis
against the session's real Redis), then what is particular to S3 and Redis.

File and S3 judge expiry with the injected clock, so their "expire" advances a FakeClock; Redis
judges it with the server's TIME, so its "expire" waits (real time) until the server's clock
has passed the term's end. Terms that must expire are taken with a short ttl.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis
from botocore.config import Config
from redis.backoff import NoBackoff
from redis.retry import Retry
from support import free_port, wait_for
from support.automation import race_acquire

from conveyor.automation.lease import (
    FileLease,
    Lease,
    RedisLease,
    S3Lease,
    Term,
    open_lease,
    parse_s3_location,
)
from conveyor.automation.lease._base import LeaseRecord
from conveyor.automation.settings import EndpointRef, LeaderElection, parse_automation_settings
from conveyor.clock import FakeClock
from conveyor.errors import LeaseError
from conveyor.redis.keys import Keys
from conveyor.redis.leases import LeaseStore
from conveyor.redis.store import Store

BUCKET = "conveyor-leases"
#: Ttl of terms a test lets expire; long enough for a few Redis round trips.
SHORT = 0.25
LONG = 60.0


# -- moto's S3 server, one per module -----------------------------------------------------------

# moto's S3 server (5.2.1) honours If-Match and If-None-Match on PutObject (probed: a stale
# ETag or an existing key gets 412), but it checks the condition and then writes without a lock,
# and ``python -m moto.server`` serves each request on its own thread: two concurrent
# conditional writes could both pass there (never seen in 200 rounds of 8 racing creators, but
# nothing in moto prevents it), which real S3 never allows. So the server is started
# with moto's own app and werkzeug's server on one thread, which serves one request at a time,
# giving the check-and-write the atomicity real S3 has.
MOTO_SERVER = """
import sys
from werkzeug.serving import run_simple
from moto.server import DomainDispatcherApplication, create_backend_app
run_simple("127.0.0.1", int(sys.argv[1]), DomainDispatcherApplication(create_backend_app),
           threaded=False)
"""


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The endpoint configuration of a fresh moto S3 server (fake credentials live here, not in
    the session's environment), with the lease bucket created."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", MOTO_SERVER, str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    config = {
        "endpoint_url": f"http://127.0.0.1:{port}",
        "region": "us-east-1",
        "access_key_id": "testing",
        "secret_access_key": "testing",
        "bucket": BUCKET,
    }
    client = _client(config)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                client.create_bucket(Bucket=BUCKET)
                break
            except Exception:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError(f"moto server did not start; see {log}") from None
                time.sleep(0.1)
        yield config
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def s3_client(s3_endpoint: dict[str, str]) -> Iterator[Any]:
    client = _client(s3_endpoint)
    yield client
    client.close()


def _client(config: dict[str, str], botocore_config: Config | None = None) -> Any:
    return boto3.session.Session(
        aws_access_key_id=config["access_key_id"],
        aws_secret_access_key=config["secret_access_key"],
        region_name=config["region"],
    ).client("s3", endpoint_url=config["endpoint_url"], config=botocore_config)


# -- the backends, behind one small interface ---------------------------------------------------
@dataclass
class Backend:
    name: str
    #: A new handle on the same lease, as another node would open it.
    open: Callable[[], Lease]
    #: Let ``term`` run out (advance the fake clock, or wait for the Redis server's clock).
    expire: Callable[[Term], None]
    #: Let a little time pass (so a renewal can move expires_at forward).
    pass_time: Callable[[float], None]


def _file_backend(tmp_path: Path) -> Backend:
    clock = FakeClock()

    def expire(term: Term) -> None:
        clock.advance(max(0.0, term.expires_at - clock.time()) + 0.001)

    return Backend(
        "file", lambda: FileLease(tmp_path / "wf.txt", clock=clock), expire, clock.advance
    )


def _s3_backend(client: Any) -> Backend:
    # One boto3 client for every handle (they are thread-safe, and building one takes a
    # noticeable fraction of a second); open_lease's own client is tested further down.
    clock = FakeClock()
    key = f"leases/{uuid.uuid4().hex}/wf.txt"

    def expire(term: Term) -> None:
        clock.advance(max(0.0, term.expires_at - clock.time()) + 0.001)

    return Backend(
        "aws-s3", lambda: S3Lease(BUCKET, key, client=client, clock=clock), expire, clock.advance
    )


def _redis_backend(client: redis.Redis) -> Backend:
    store = Store(client)
    leases = LeaseStore(store)

    def expire(term: Term) -> None:
        wait_for(lambda: leases.server_time_ms() / 1000 > term.expires_at, timeout=30)

    return Backend("redis", lambda: RedisLease(store, "wf"), expire, time.sleep)


@pytest.fixture(params=["file", "aws-s3", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "file":
        return _file_backend(tmp_path)
    if request.param == "aws-s3":
        return _s3_backend(request.getfixturevalue("s3_client"))
    return _redis_backend(request.getfixturevalue("r"))


# -- the contract -------------------------------------------------------------------------------
def test_first_term_has_fence_1_and_peek_shows_it(backend: Backend) -> None:
    lease = backend.open()
    assert lease.peek() is None
    term = lease.acquire("node-a", LONG)
    assert term is not None and term.holder == "node-a" and term.fence == 1
    assert backend.open().peek() == term
    assert backend.name in lease.description


def test_a_live_term_refuses_other_holders_and_renews_for_its_own(backend: Backend) -> None:
    a, b = backend.open(), backend.open()
    term = a.acquire("node-a", LONG)
    assert term is not None
    assert b.acquire("node-b", LONG) is None
    backend.pass_time(0.05)
    again = b.acquire("node-a", LONG)  # the same node, through another handle
    assert again is not None and again.fence == term.fence and again.holder == "node-a"
    assert again.expires_at > term.expires_at


def test_renew_extends_the_same_term(backend: Backend) -> None:
    lease = backend.open()
    term = lease.acquire("node-a", LONG)
    assert term is not None
    backend.pass_time(0.05)
    renewed = lease.renew(term, LONG)
    assert renewed is not None and renewed.fence == term.fence and renewed.holder == "node-a"
    assert renewed.expires_at > term.expires_at
    assert lease.renew(renewed, LONG) is not None  # the renewed term renews too


def test_renew_by_a_non_holder_fails_and_changes_nothing(backend: Backend) -> None:
    lease = backend.open()
    term = lease.acquire("node-a", LONG)
    assert term is not None
    assert lease.renew(replace(term, holder="node-b"), LONG) is None
    assert lease.renew(replace(term, fence=term.fence + 1), LONG) is None
    assert lease.renew(replace(term, fence=term.fence - 1), LONG) is None
    assert lease.peek() == term


def test_takeover_after_expiry_gets_the_next_fence(backend: Backend) -> None:
    a, b = backend.open(), backend.open()
    old = a.acquire("node-a", SHORT)
    assert old is not None
    assert b.acquire("node-b", LONG) is None
    backend.expire(old)
    new = b.acquire("node-b", LONG)
    assert new is not None and new.holder == "node-b" and new.fence == old.fence + 1
    # The old holder's term is gone for good: no renew, no acquire, no release of the new one.
    assert a.renew(old, LONG) is None
    assert a.acquire("node-a", LONG) is None
    a.release(old)
    assert b.peek() == new
    assert b.renew(new, LONG) is not None


def test_renew_after_expiry_fails_even_when_nobody_took_over(backend: Backend) -> None:
    lease = backend.open()
    old = lease.acquire("node-a", SHORT)
    assert old is not None
    backend.expire(old)
    assert lease.renew(old, LONG) is None
    # The same node starts a new term: a new fence, since it stopped acting at its deadline.
    new = lease.acquire("node-a", LONG)
    assert new is not None and new.fence == old.fence + 1


def test_release_frees_the_lease_and_is_idempotent(backend: Backend) -> None:
    a, b = backend.open(), backend.open()
    term = a.acquire("node-a", LONG)
    assert term is not None
    a.release(term)
    a.release(term)
    last = b.peek()
    assert last is not None and last.holder == "node-a" and last.fence == term.fence
    assert a.renew(term, LONG) is None
    new = b.acquire("node-b", LONG)
    assert new is not None and new.fence == term.fence + 1
    a.release(term)  # a stale release does not touch the new holder's term
    assert b.peek() == new
    assert a.acquire("node-a", LONG) is None


def test_fences_strictly_increase_over_many_terms(backend: Backend) -> None:
    lease = backend.open()
    fences = []
    for i in range(6):
        term = lease.acquire(f"node-{i % 3}", LONG)
        assert term is not None
        fences.append(term.fence)
        lease.release(term)
    assert fences == list(range(1, 7))


def test_concurrent_acquires_have_exactly_one_winner(backend: Backend) -> None:
    handles = [backend.open() for _ in range(6)]
    results = race_acquire(handles, LONG)
    winners = [t for t in results if t is not None]
    assert len(winners) == 1, results
    assert winners[0].fence == 1 and handles[0].peek() == winners[0]


def test_bad_arguments_are_refused_with_the_value(backend: Backend) -> None:
    lease = backend.open()
    with pytest.raises(LeaseError, match=r"ttl must be a positive number of seconds, got -1"):
        lease.acquire("node-a", -1)
    with pytest.raises(LeaseError, match="holder must be a non-empty string"):
        lease.acquire("", LONG)
    assert lease.peek() is None


# -- S3 particulars -----------------------------------------------------------------------------
def test_s3_every_renew_changes_the_body_and_the_etag(s3_endpoint: dict[str, str]) -> None:
    clock = FakeClock()
    lease = S3Lease(BUCKET, f"etag/{uuid.uuid4().hex}.txt", config=s3_endpoint, clock=clock)
    client = _client(s3_endpoint)
    term = lease.acquire("node-a", LONG)
    assert term is not None
    etags = [client.head_object(Bucket=BUCKET, Key=lease.key)["ETag"]]
    for _ in range(3):
        # Same clock reading: only the renew counter tells the bodies apart.
        renewed = lease.renew(term, LONG)
        assert renewed is not None
        etags.append(client.head_object(Bucket=BUCKET, Key=lease.key)["ETag"])
    assert len(set(etags)) == 4
    body = client.get_object(Bucket=BUCKET, Key=lease.key)["Body"].read()
    record = LeaseRecord.loads(body)
    assert record is not None and record.renewed == 3 and record.fence == term.fence
    client.close()


def test_s3_writes_are_conditional(s3_endpoint: dict[str, str]) -> None:
    """The compare step itself: a write with a stale ETag, or a create over an existing
    object, is refused by the server (moto 5.2.1 enforces If-Match and If-None-Match on
    PutObject; probed before this was written)."""
    clock = FakeClock()
    key = f"cond/{uuid.uuid4().hex}.txt"
    a = S3Lease(BUCKET, key, config=s3_endpoint, clock=clock)
    b = S3Lease(BUCKET, key, config=s3_endpoint, clock=clock)
    first = LeaseRecord("node-a", 1, clock.time() + 60)
    assert a._put(first, None)
    assert not b._put(LeaseRecord("node-b", 1, clock.time() + 60), None)  # If-None-Match: *
    _, etag = a._get()
    assert a.renew(first.term(), 60) is not None  # changes the ETag
    assert not b._put(LeaseRecord("node-b", 2, clock.time() + 60), etag)  # stale If-Match
    assert a.peek() is not None and a.peek().holder == "node-a"  # type: ignore[union-attr]


def test_s3_foreign_object_is_not_overwritten(s3_endpoint: dict[str, str]) -> None:
    key = f"foreign/{uuid.uuid4().hex}.txt"
    client = _client(s3_endpoint)
    client.put_object(Bucket=BUCKET, Key=key, Body=b"somebody's notes")
    lease = S3Lease(BUCKET, key, config=s3_endpoint)
    with pytest.raises(LeaseError, match="not a lease record"):
        lease.acquire("node-a", LONG)
    assert client.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"somebody's notes"
    client.close()


def test_s3_missing_bucket_and_bad_endpoint_are_lease_errors(
    s3_endpoint: dict[str, str],
) -> None:
    lease = S3Lease("no-such-bucket-here", "k.txt", config=s3_endpoint)
    with pytest.raises(LeaseError, match="bucket does not exist"):
        lease.acquire("node-a", LONG)
    dead = {**s3_endpoint, "endpoint_url": f"http://127.0.0.1:{free_port()}"}
    client = _client(dead, Config(retries={"max_attempts": 1}))  # no retry backoff to sit out
    with pytest.raises(LeaseError, match=re.escape("aws-s3:conveyor-leases/k.txt: cannot read")):
        S3Lease(BUCKET, "k.txt", client=client).peek()
    client.close()


def test_s3_open_lease_takes_bucket_and_credentials_from_the_endpoint(
    s3_endpoint: dict[str, str],
) -> None:
    ref = EndpointRef("mystorage", "aws_s3", s3_endpoint)
    lease = open_lease(LeaderElection(type="aws-s3", path="locks/", auth_endpoint=ref), "wf")
    assert lease.description == f"aws-s3:{BUCKET}/locks/wf.txt"
    assert lease.acquire("node-a", LONG) is not None
    # endpoints= overrides the configuration carried by the settings.
    broken = EndpointRef("mystorage", "aws_s3", {**s3_endpoint, "endpoint_url": "http://x.invalid"})
    election = LeaderElection(type="aws-s3", path="locks/", auth_endpoint=broken)
    fixed = open_lease(election, "wf", endpoints={"mystorage": s3_endpoint})
    assert fixed.peek() is not None and fixed.peek().holder == "node-a"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("path", "bucket", "expected"),
    [
        ("s3://b-1/a/wf.txt", None, ("b-1", "a/wf.txt")),
        ("s3://b-1/a/wf.txt", "b-1", ("b-1", "a/wf.txt")),
        ("a/wf.txt", "b-1", ("b-1", "a/wf.txt")),
    ],
)
def test_s3_location(path: str, bucket: str | None, expected: tuple[str, str]) -> None:
    assert parse_s3_location(path, bucket) == expected


@pytest.mark.parametrize(
    ("path", "bucket", "message"),
    [
        ("a/wf.txt", None, "names no bucket: write it as s3://BUCKET/KEY"),
        ("s3://b-1/wf.txt", "other", "names bucket 'b-1' but the endpoint's bucket is 'other'"),
        ("s3://B_1/wf.txt", None, "'B_1' is not a valid S3 bucket name"),
        ("s3://b-1/", None, "must be an object key"),
        ("s3://b-1", None, "must be an object key"),
        ("/abs/wf.txt", "b-1", "no leading '/'"),
        ("", "b-1", "must be a non-empty string"),
    ],
)
def test_s3_location_errors_name_the_value(path: str, bucket: str | None, message: str) -> None:
    with pytest.raises(LeaseError, match=re.escape(message)):
        parse_s3_location(path, bucket)


def test_s3_empty_credentials_are_refused() -> None:
    with pytest.raises(LeaseError, match="secret_access_key is empty; set it or leave it out"):
        S3Lease(BUCKET, "k.txt", config={"access_key_id": "AKIA", "secret_access_key": ""})


def test_s3_needs_a_path() -> None:
    with pytest.raises(LeaseError, match=r"needs leaderElection\.path"):
        open_lease(LeaderElection(type="aws-s3"), "wf")


# -- Redis particulars --------------------------------------------------------------------------
def test_redis_expiry_follows_the_server_clock(r: redis.Redis) -> None:
    store = Store(r)
    lease = RedisLease(store, "wf")
    before = LeaseStore(store).server_time_ms() / 1000
    term = lease.acquire("node-a", 30)
    after = LeaseStore(store).server_time_ms() / 1000
    assert term is not None and before + 30 <= term.expires_at <= after + 30


def test_redis_fence_never_repeats_when_either_key_is_lost(r: redis.Redis) -> None:
    store = Store(r, Keys("app"))
    lease = RedisLease(store, "wf")
    fences = []
    for lost in ("app:conveyor:lease-fence:wf", "app:conveyor:lease:wf", None):
        term = lease.acquire("node-a", LONG)
        assert term is not None
        fences.append(term.fence)
        lease.release(term)
        if lost:
            assert r.delete(lost) == 1
    assert fences == [1, 2, 3]
    last = lease.acquire("node-b", LONG)
    assert last is not None and last.fence == 4 and last.holder == "node-b"


def test_open_lease_redis(r: redis.Redis) -> None:
    lease = open_lease(LeaderElection(type="redis"), "wf", redis_client=r)
    assert lease.description == "redis:wf"
    named = open_lease(LeaderElection(type="redis", path="shared-name"), "wf", store=Store(r))
    assert named.description == "redis:shared-name"
    assert lease.acquire("node-a", LONG) is not None and named.acquire("node-b", LONG) is not None
    with pytest.raises(LeaseError, match="pass store= or redis_client="):
        open_lease(LeaderElection(type="redis"), "wf")


def test_redis_lease_works_with_a_client_that_returns_bytes(redis_url: str, r: redis.Redis) -> None:
    raw = redis.Redis.from_url(redis_url)  # decode_responses=False, as an app's client may be
    lease = open_lease(LeaderElection(type="redis"), "wf", redis_client=raw)
    term = lease.acquire("node-a", LONG)
    assert term is not None and term.holder == "node-a" and term.fence == 1
    assert lease.peek() == term and lease.renew(term, LONG) is not None
    raw.close()


def test_redis_connection_failure_is_a_lease_error() -> None:
    client = redis.Redis(port=free_port(), retry=Retry(NoBackoff(), 0))
    with pytest.raises(LeaseError, match="redis:wf: Redis failed"):
        RedisLease(Store(client), "wf").acquire("node-a", LONG)
    client.close()


# -- from the settings file to a held lease -----------------------------------------------------
def _settings(leader: dict[str, Any], endpoint: dict[str, str] | None = None) -> dict[str, Any]:
    functions: dict[str, Any] = {
        "automation": {
            "meta": {"enable": True},
            "workflows": [
                {
                    "name": "migrate_tmpimg",
                    "steps": {
                        "prepare": {"playbook": "p.yml", "leaderElection": leader},
                        "execute": {"playbook": "e.yml"},
                    },
                }
            ],
        }
    }
    if endpoint is not None:
        functions["aws_s3"] = {"endpoints": [{"name": "mystorage", **endpoint}]}
    return {"functions": {"backend": functions}}


def test_settings_aws_s3_election_opens_a_working_lease(s3_endpoint: dict[str, str]) -> None:
    document = _settings(
        {"type": "aws-s3", "path": "conveyor/leases/", "authEndpoint": "mystorage@aws_s3"},
        s3_endpoint,
    )
    workflow = parse_automation_settings(document).workflow("migrate_tmpimg")
    assert workflow.steps.prepare is not None
    lease = open_lease(workflow.steps.prepare.leader_election, workflow.name)
    assert lease.description == f"aws-s3:{BUCKET}/conveyor/leases/migrate_tmpimg.txt"
    term = lease.acquire("node-a", LONG)
    assert term is not None and lease.peek() == term


def test_settings_redis_election_opens_a_working_lease(r: redis.Redis) -> None:
    workflow = parse_automation_settings(_settings({"type": "redis"})).workflow("migrate_tmpimg")
    assert workflow.steps.prepare is not None
    election = workflow.steps.prepare.leader_election
    assert election.type == "redis"
    lease = open_lease(election, workflow.name, redis_client=r)
    assert lease.description == "redis:migrate_tmpimg"
    assert lease.acquire("node-a", LONG) is not None
    assert r.hget("conveyor:lease:migrate_tmpimg", "holder") == "node-a"

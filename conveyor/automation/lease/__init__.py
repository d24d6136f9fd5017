"""Leader election for automation workflows (SPEC AUTO-9, issue #6): one master per workflow,
elected through a lease held in a shared file, an S3 object or Redis.

A :class:`Lease` is the storage (acquire, renew, release, peek); every new term carries a
fencing number one higher than the last, so work handed out under an older term can be told
apart and rejected. :class:`Leadership` is one node's hold on a lease: call
:meth:`~Leadership.tick` often, act as master only while it returns a term. See
docs/leader-election.md.

>>> from conveyor.automation.settings import LeaderElection
>>> from conveyor.clock import FakeClock
>>> import tempfile
>>> clock = FakeClock()
>>> where = LeaderElection(path=tempfile.mkdtemp() + "/")
>>> lease = open_lease(where, "migrate", clock=clock)
>>> node = Leadership(lease, "node-a", term=300, clock=clock)
>>> node.tick().fence
1
>>> clock.advance(280)      # no tick for 280 s: past the deadline (300 - 60 s margin)
>>> node.current() is None
True
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import redis

from conveyor.automation.lease._base import Lease, LeaseRecord, Term
from conveyor.automation.lease._file import FileLease
from conveyor.automation.lease._leadership import Leadership
from conveyor.automation.lease._redis import RedisLease
from conveyor.automation.lease._s3 import S3Lease, parse_s3_location
from conveyor.automation.settings import LeaderElection
from conveyor.clock import SYSTEM_CLOCK, Clock
from conveyor.errors import LeaseError
from conveyor.redis.store import Store
from conveyor.settings import DEFAULT_STATE_DIR

__all__ = [
    "FileLease",
    "Leadership",
    "Lease",
    "LeaseRecord",
    "RedisLease",
    "S3Lease",
    "Term",
    "default_lease_path",
    "open_lease",
    "parse_s3_location",
]

_WORKFLOW = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _check_workflow(workflow: str) -> str:
    if not isinstance(workflow, str) or not _WORKFLOW.match(workflow):
        raise LeaseError(
            f"workflow name {workflow!r} cannot name a lease: use letters, digits, '_', '.' and "
            "'-', starting with a letter or digit"
        )
    return workflow


def default_lease_path(workflow: str, state_dir: str | None = None) -> str:
    """``<state_dir>/leases/<workflow>.txt``: a file lease for one machine (tests, a laptop).
    ``open_lease`` no longer uses it for a null path: that is the Redis lease every node
    shares.

    >>> default_lease_path("migrate", "/var/lib/conveyor")
    '/var/lib/conveyor/leases/migrate.txt'
    """
    base = os.path.expanduser(state_dir or DEFAULT_STATE_DIR)
    return os.path.join(base, "leases", f"{_check_workflow(workflow)}.txt")


def open_lease(
    election: LeaderElection,
    workflow: str,
    *,
    endpoints: Mapping[str, Mapping[str, Any]] | None = None,
    redis_client: redis.Redis | None = None,
    store: Store | None = None,
    clock: Clock = SYSTEM_CLOCK,
    state_dir: str | None = None,
) -> Lease:
    """The lease ``election`` (a workflow's ``leaderElection`` settings) describes.

    - ``file`` with a path: ``election.lease_path(workflow)`` (its directory must exist).
    - ``file`` with ``path: null`` (the manual's example): the Redis lease named after the
      workflow, which every node sharing the Redis sees. A local file would elect one master
      per machine. ``state_dir`` is accepted for compatibility and not used.
    - ``aws-s3``: bucket and key from the path (``s3://BUCKET/KEY``, or a key inside the
      endpoint's ``bucket``); credentials, region and ``endpoint_url`` from the
      ``authEndpoint``'s configuration. ``endpoints`` (endpoint name -> configuration), when
      given and naming that endpoint, is used instead (e.g. secrets resolved by the caller).
    - ``redis``: a lease in Redis named by the path, or the workflow name when it is null;
      needs ``store`` or ``redis_client``.

    ``clock`` judges expiry for ``file`` and ``aws-s3`` (Redis uses its server clock).
    """
    _check_workflow(workflow)
    if election.type == "file" and election.path is not None:
        return FileLease(election.lease_path(workflow) or election.path, clock=clock)
    if election.type == "aws-s3":
        return _open_s3(election, workflow, endpoints, clock)
    if election.type in ("redis", "file"):
        if store is None:
            if redis_client is None:
                raise LeaseError(
                    f"the lease of workflow {workflow!r} lives in Redis (leaderElection type "
                    f"{election.type!r}, path {election.path!r}): pass store= or redis_client="
                )
            store = Store(redis_client)
        return RedisLease(store, election.lease_path(workflow) or workflow)
    raise LeaseError(
        f"leaderElection.type {election.type!r} is not supported: use 'file', 'aws-s3' or 'redis'"
    )


def _open_s3(
    election: LeaderElection,
    workflow: str,
    endpoints: Mapping[str, Mapping[str, Any]] | None,
    clock: Clock,
) -> S3Lease:
    path = election.lease_path(workflow)
    if path is None:
        raise LeaseError(
            f"workflow {workflow!r}: an aws-s3 lease needs leaderElection.path "
            "(s3://BUCKET/KEY, or a key inside the endpoint's bucket)"
        )
    config: Mapping[str, Any] = {}
    ref = election.auth_endpoint
    if ref is not None:
        config = ref.config
        if endpoints is not None and ref.endpoint in endpoints:
            config = endpoints[ref.endpoint]
    bucket = config.get("bucket")
    if bucket is not None and not isinstance(bucket, str):
        raise LeaseError(f"aws-s3 endpoint {ref}: bucket must be a string, got {bucket!r}")
    bucket_name, key = parse_s3_location(path, bucket or None)
    return S3Lease(bucket_name, key, config=config, clock=clock)

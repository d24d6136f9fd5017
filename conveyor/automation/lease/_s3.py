"""The ``aws-s3`` lease: one S3 object holding the JSON lease record, changed only with
conditional writes.

- The first term creates the object with ``If-None-Match: *`` (fails if it exists).
- Renew, takeover and release read the object with its ETag and write it back with
  ``If-Match: <etag>``: if anyone wrote in between, S3 answers 412 (or 409 for a concurrent
  conditional write) and the caller lost the race.
- Every write changes the body (``expires_at`` and the ``renewed`` counter), so every write
  changes the ETag: a renew can never be mistaken for "nothing changed".
- Release rewrites the object marked ``released`` instead of deleting it: the object keeps the
  fence, so the next term still counts up. Deleting the object restarts fences at 1.

Expiry is judged with the acting node's wall clock (``clock.time()``): node clocks must agree
to well within the :class:`~conveyor.automation.lease.Leadership` margin (run NTP).

Location: ``path`` is either ``s3://BUCKET/KEY`` or a ``KEY`` inside the endpoint's ``bucket``
(see :func:`parse_s3_location`). Credentials come from the endpoint configuration
(``access_key_id``, ``secret_access_key``, optional ``session_token``, ``region``,
``endpoint_url``); the ones it leaves out come from boto3's standard chain (environment,
``~/.aws``, instance role).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import botocore.exceptions

from conveyor.automation.lease._base import (
    LeaseRecord,
    Term,
    check_holder,
    check_ttl,
    plan_acquire,
    plan_release,
    plan_renew,
)
from conveyor.clock import SYSTEM_CLOCK, Clock
from conveyor.errors import LeaseError

#: Endpoint configuration keys the S3 lease reads (others, such as ``name``, are ignored).
CONFIG_KEYS = (
    "bucket",
    "region",
    "endpoint_url",
    "access_key_id",
    "secret_access_key",
    "session_token",
)

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
#: S3 answers 412 when If-Match/If-None-Match fails, 409 when another conditional write to
#: the same key is in flight.
_LOST = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}
_MISSING = {"NoSuchKey", "404", "NotFound"}


def parse_s3_location(path: str, bucket: str | None = None) -> tuple[str, str]:
    """``(bucket, key)`` of a lease object.

    ``path`` is ``s3://BUCKET/KEY``, or a plain ``KEY`` inside ``bucket`` (the endpoint's
    ``bucket`` setting). When both name a bucket they must agree.

    >>> parse_s3_location("s3://leases/wf/migrate.txt")
    ('leases', 'wf/migrate.txt')
    >>> parse_s3_location("wf/migrate.txt", "leases")
    ('leases', 'wf/migrate.txt')
    """
    if not isinstance(path, str) or not path.strip():
        raise LeaseError(f"aws-s3 lease path must be a non-empty string, got {path!r}")
    if path.startswith("s3://"):
        named, _, key = path[len("s3://") :].partition("/")
        if bucket and named != bucket:
            raise LeaseError(
                f"aws-s3 lease path {path!r} names bucket {named!r} but the endpoint's bucket "
                f"is {bucket!r}: make them agree, or drop one of them"
            )
        bucket = named
    else:
        key = path
        if not bucket:
            raise LeaseError(
                f"aws-s3 lease path {path!r} names no bucket: write it as s3://BUCKET/KEY, or "
                'set "bucket" in the authEndpoint\'s endpoint configuration'
            )
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise LeaseError(
            f"aws-s3 lease bucket {bucket!r} is not a valid S3 bucket name (3-63 lowercase "
            "letters, digits, '.' and '-')"
        )
    if not key or key.startswith("/") or key.endswith("/"):
        raise LeaseError(
            f"aws-s3 lease key {key!r} (from path {path!r}) must be an object key such as "
            "'leases/migrate.txt': not empty, no leading '/', not ending in '/'"
        )
    return bucket, key


def s3_client(config: Mapping[str, Any]) -> Any:
    """A boto3 S3 client from an endpoint configuration (missing credentials: boto3's chain).

    Timeouts are short and retries few: a lease call that hangs longer than a fraction of the
    term is worth less than a quick failure (the holder stops at its deadline either way).
    """
    # Imported here: boto3 takes a noticeable time to import, and most nodes use another lease.
    import boto3
    from botocore.config import Config

    empty = [k for k in ("access_key_id", "secret_access_key") if k in config and not config[k]]
    if empty:
        raise LeaseError(f"aws-s3 endpoint: {', '.join(empty)} is empty; set it or leave it out")
    session = boto3.session.Session(
        aws_access_key_id=config.get("access_key_id"),
        aws_secret_access_key=config.get("secret_access_key"),
        aws_session_token=config.get("session_token"),
        region_name=config.get("region"),
    )
    return session.client(
        "s3",
        endpoint_url=config.get("endpoint_url"),
        config=Config(
            connect_timeout=5,
            read_timeout=10,
            retries={"max_attempts": 3, "mode": "standard"},
        ),
    )


def _code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3Lease:
    """A lease held in one S3 object (see the module docstring)."""

    def __init__(
        self,
        bucket: str,
        key: str,
        *,
        client: Any = None,
        config: Mapping[str, Any] | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.bucket = bucket
        self.key = key
        self.description = f"aws-s3:{bucket}/{key}"
        self.clock = clock
        self.client = client if client is not None else s3_client(config or {})

    def __repr__(self) -> str:
        return f"S3Lease({self.bucket!r}, {self.key!r})"

    # -- the Lease protocol ---------------------------------------------------------------------
    def acquire(self, holder: str, ttl: float) -> Term | None:
        """A new term if the object is missing, released or expired; a renewal if ``holder``
        holds it; ``None`` if another live holder has it or a concurrent write won."""
        check_holder(holder)
        ttl = check_ttl(ttl)
        record, etag = self._get()
        new = plan_acquire(record, 0, holder, self.clock.time(), ttl)
        if new is None:
            return None
        return new.term() if self._put(new, etag) else None

    def renew(self, term: Term, ttl: float) -> Term | None:
        """Extend ``term`` (same fence); ``None`` if it was taken over, released or expired."""
        ttl = check_ttl(ttl)
        record, etag = self._get()
        new = plan_renew(record, term, self.clock.time(), ttl)
        if new is None or not self._put(new, etag):
            return None
        return new.term()

    def release(self, term: Term) -> None:
        """Mark ``term`` released if it is still current (idempotent; a lost race is ignored:
        then someone else changed the object, so the term was not current any more)."""
        record, etag = self._get()
        new = plan_release(record, term, self.clock.time())
        if new is not None:
            self._put(new, etag)

    def peek(self) -> Term | None:
        """The current or last term, expired or not; ``None`` if the object does not exist."""
        record, _ = self._get()
        return None if record is None else record.term()

    # -- internals ------------------------------------------------------------------------------
    def _get(self) -> tuple[LeaseRecord | None, str | None]:
        """(record, ETag); (None, None) when the object does not exist."""
        try:
            reply = self.client.get_object(Bucket=self.bucket, Key=self.key)
            body = reply["Body"].read()
        except botocore.exceptions.ClientError as exc:
            if _code(exc) in _MISSING:
                return None, None
            raise self._error("read", exc) from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise self._error("read", exc) from exc
        record = LeaseRecord.loads(body)
        if record is None:
            raise LeaseError(
                f"{self.description} holds something that is not a lease record; it is not "
                "safe to overwrite: remove it (fences restart at 1) or point the lease elsewhere"
            )
        return record, str(reply["ETag"])

    def _put(self, record: LeaseRecord, etag: str | None) -> bool:
        """Write ``record`` if the object is unchanged since it was read (``etag``), or does
        not exist yet (``etag is None``); False if another writer got there first."""
        condition = {"IfNoneMatch": "*"} if etag is None else {"IfMatch": etag}
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=self.key,
                Body=record.dumps().encode(),
                ContentType="application/json",
                **condition,
            )
        except botocore.exceptions.ClientError as exc:
            if _code(exc) in _LOST or (etag is not None and _code(exc) in _MISSING):
                return False
            raise self._error("write", exc) from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise self._error("write", exc) from exc
        return True

    def _error(self, what: str, exc: Exception) -> LeaseError:
        code = _code(exc) if isinstance(exc, botocore.exceptions.ClientError) else ""
        hint = ""
        if code == "NoSuchBucket":
            hint = ": the bucket does not exist; create it or fix the lease path"
        elif code in {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"}:
            hint = ": check the authEndpoint credentials (s3:GetObject and s3:PutObject needed)"
        return LeaseError(f"{self.description}: cannot {what} the lease object: {exc}{hint}")

"""The web dashboard's login state, shared by every web process on the Redis: server-side
sessions (lua/web_session_*.lua) and failed-login counters (lua/web_login_fail.lua).

Nothing here holds a secret or a client address in the clear: sessions are named by the
SHA-256 of their id, clients and users by keyed digests the web layer computes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from conveyor.redis.store import Store

#: ``(kind, digest)``: ``("client", ...)`` or ``("user", ...)``.
Subject = tuple[str, str]


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """Who a session belongs to and under which credentials it was made."""

    user: str
    credential: str


@dataclass(frozen=True, slots=True)
class Failures:
    """Failed logins of one subject in its current window, and the ms left of the window."""

    count: int
    ttl_ms: int


class WebAuthStore:
    """Sessions and failed-login counters for one key prefix.

    >>> auth = WebAuthStore(app.store)                                   # doctest: +SKIP
    >>> auth.create_session(digest, "ops", cred, ttl_ms=3_600_000, keep=1000)  # doctest: +SKIP
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.keys = store.keys

    # -- sessions ---------------------------------------------------------------------------------
    def create_session(
        self, digest: str, user: str, credential: str, *, ttl_ms: int, keep: int
    ) -> int:
        """Record a session for ``ttl_ms``; returns how many old ones were revoked to keep at
        most ``keep``."""
        k = self.keys
        args = [digest, user, credential, max(1, ttl_ms), max(1, keep), k.web_session_prefix]
        return int(
            self.store.scripts.run(
                "web_session_create", [k.web_session(digest), k.web_sessions], args
            )
        )

    def session(self, digest: str) -> SessionRecord | None:
        """The live session named ``digest``, or ``None`` (never made, expired or revoked)."""
        user, credential = self.store.client.hmget(self.keys.web_session(digest), ["user", "cred"])
        if user is None or credential is None:
            return None
        return SessionRecord(str(user), str(credential))

    def revoke(self, digest: str) -> bool:
        """End one session (logout); ``False`` if it had ended already."""
        k = self.keys
        args = ["one", digest, k.web_session_prefix]
        return bool(self.store.scripts.run("web_session_revoke", [k.web_sessions], args))

    def revoke_other_credentials(self, credential: str) -> int:
        """End every session made under credentials other than ``credential``."""
        k = self.keys
        args = ["other-credentials", credential, k.web_session_prefix]
        return int(self.store.scripts.run("web_session_revoke", [k.web_sessions], args))

    def session_count(self) -> int:
        """Sessions in the index (expired ones until the next login or revocation)."""
        return int(self.store.client.zcard(self.keys.web_sessions))

    # -- failed logins ----------------------------------------------------------------------------
    def failures(self, subjects: Sequence[Subject]) -> list[Failures]:
        """The current failure count and window of each subject (0, 0 when there is none)."""
        pipe = self.store.client.pipeline(transaction=False)
        for kind, digest in subjects:
            key = self.keys.web_login_failures(kind, digest)
            pipe.get(key)
            pipe.pttl(key)
        flat = pipe.execute()
        return [
            Failures(int(flat[i] or 0), max(0, int(flat[i + 1])) if flat[i] else 0)
            for i in range(0, len(flat), 2)
        ]

    def record_failure(
        self, subjects: Sequence[Subject], *, window_ms: int, limit: int
    ) -> list[Failures]:
        """Count one failed login against each subject; returns the new counts."""
        if not subjects:
            return []
        keys = [self.keys.web_login_failures(kind, digest) for kind, digest in subjects]
        flat = self.store.scripts.run("web_login_fail", keys, [max(1, window_ms), max(1, limit)])
        return [Failures(int(flat[i]), int(flat[i + 1])) for i in range(0, len(flat), 2)]

    def clear_failures(self, subjects: Sequence[Subject]) -> None:
        """Forget the subjects' failures (after a successful login)."""
        if subjects:
            keys = [self.keys.web_login_failures(kind, digest) for kind, digest in subjects]
            self.store.client.delete(*keys)

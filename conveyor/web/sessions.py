"""Server-side login sessions and failed-login throttling for the dashboard (state in Redis,
:mod:`conveyor.redis.web_logins`, so every web process sees the same).

A login gets a random session id; the signed cookie holds only that id, and Redis holds the
session (user, credentials it was made under) for ``session_max_age``. Every request looks
the id up, so logging out, or restarting with another password or token, ends the session for
whoever holds a copy of the cookie, not only for the browser that had it.

Failed logins are counted per client address and per user (keyed digests, never the address
itself) for ``login_window`` seconds. Each failure is answered after a delay that doubles
(``login_delay``, up to :data:`~conveyor.web.config.MAX_LOGIN_DELAY`); after
``login_max_failures`` every attempt from that client, or for that user, is refused with 429
and ``Retry-After`` until the window ends, the right password included.

These methods block on Redis: call them from a worker thread (``run_in_threadpool``).
"""

from __future__ import annotations

import hashlib
import math
import secrets
from dataclasses import dataclass

from conveyor.redis.web_logins import Failures, Subject, WebAuthStore
from conveyor.web.config import MAX_LOGIN_DELAY, WebSettings

#: Sessions kept at once (all users); the oldest are revoked past it.
MAX_SESSIONS = 1000


def session_digest(session_id: str) -> str:
    """What Redis names a session by: someone reading Redis cannot use it as a cookie.

    >>> len(session_digest("abc"))
    64
    """
    return hashlib.sha256(session_id.encode()).hexdigest()


@dataclass(frozen=True)
class Attempt:
    """Who is trying to log in: the client address and, for a password login naming the
    configured user, that user."""

    client: str
    user: str | None = None


@dataclass(frozen=True)
class Claim:
    """A login attempt counted in advance: refused (``retry_after`` seconds) or to be checked,
    with ``delay`` seconds to wait before answering it if it fails."""

    retry_after: int | None
    delay: float


def _seconds(ms: int) -> int:
    return max(1, math.ceil(ms / 1000))


class Logins:
    """Sessions and throttling of one dashboard.

    >>> logins = Logins(WebAuthStore(app.store), web_settings)        # doctest: +SKIP
    >>> session_id = logins.start("ops")                               # doctest: +SKIP
    >>> logins.user_of(session_id)                                     # doctest: +SKIP
    'ops'
    """

    def __init__(self, store: WebAuthStore, settings: WebSettings) -> None:
        self.store = store
        self.settings = settings
        self._credential = settings.credential_id()

    # -- sessions ---------------------------------------------------------------------------------
    def start(self, user: str) -> str:
        """A new session for ``user``; returns the id the cookie carries."""
        session_id = secrets.token_urlsafe(32)
        self.store.create_session(
            session_digest(session_id),
            user,
            self._credential,
            ttl_ms=int(self.settings.session_max_age * 1000),
            keep=MAX_SESSIONS,
        )
        return session_id

    def user_of(self, session_id: str) -> str | None:
        """The user of a live session made under the current credentials, else ``None`` (a
        session from older credentials is revoked on sight)."""
        digest = session_digest(session_id)
        record = self.store.session(digest)
        if record is None:
            return None
        if not secrets.compare_digest(record.credential, self._credential):
            self.store.revoke(digest)
            return None
        return record.user

    def end(self, session_id: str) -> None:
        """Revoke a session (logout)."""
        self.store.revoke(session_digest(session_id))

    def revoke_stale(self) -> int:
        """Revoke every session made under other credentials (run at start)."""
        return self.store.revoke_other_credentials(self._credential)

    # -- throttling -------------------------------------------------------------------------------
    def _subjects(self, attempt: Attempt) -> list[Subject]:
        out = [("client", self.settings.client_digest("client", attempt.client))]
        if attempt.user is not None:
            out.append(("user", self.settings.client_digest("user", attempt.user)))
        return out

    def retry_after(self, attempt: Attempt) -> int | None:
        """Seconds until ``attempt`` may be tried again, or ``None`` when it may now."""
        limit = self.settings.login_max_failures
        waits = [f.ttl_ms for f in self.store.failures(self._subjects(attempt)) if f.count >= limit]
        return _seconds(max(waits)) if waits else None

    def failed(self, attempt: Attempt) -> float:
        """Count a failed attempt; returns how long to wait before answering it (seconds)."""
        return self._delay(max(f.count for f in self._record(attempt)))

    def claim(self, attempt: Attempt) -> Claim:
        """Count an attempt as failed *before* its credentials are checked (a success clears
        it), so concurrent guesses cannot all slip in under the limit."""
        counts = self._record(attempt)
        over = [f.ttl_ms for f in counts if f.count > self.settings.login_max_failures]
        worst = max(f.count for f in counts)
        return Claim(_seconds(max(over)) if over else None, self._delay(worst))

    def _record(self, attempt: Attempt) -> list[Failures]:
        return self.store.record_failure(
            self._subjects(attempt),
            window_ms=int(self.settings.login_window * 1000),
            limit=self.settings.login_max_failures,
        )

    def _delay(self, failures: int) -> float:
        return float(min(MAX_LOGIN_DELAY, self.settings.login_delay * 2 ** min(failures - 1, 16)))

    def succeeded(self, attempt: Attempt) -> None:
        """Forget the attempt's earlier failures."""
        self.store.clear_failures(self._subjects(attempt))

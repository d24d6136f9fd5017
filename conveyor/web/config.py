"""Settings of the web dashboard: who may log in, the session secret, what is public.

Built explicitly (:class:`WebSettings`) or from the Conveyor settings' ``extra["web"]`` (the
JSON settings file) and ``CONVEYOR_WEB_*`` environment variables, read when called.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from conveyor.errors import ConfigurationError
from conveyor.redis_url import mask_url
from conveyor.settings import Settings

#: Environment variable -> field.
ENV = {
    "CONVEYOR_WEB_TOKEN": "token",
    "CONVEYOR_WEB_USER": "user",
    "CONVEYOR_WEB_PASSWORD": "password",
    "CONVEYOR_WEB_SECRET": "secret_key",
    "CONVEYOR_WEB_ALLOW_ANONYMOUS": "allow_anonymous",
    "CONVEYOR_WEB_PUBLIC_METRICS": "public_metrics",
    "CONVEYOR_WEB_SECURE_COOKIES": "secure_cookies",
}
_BOOLS = {"allow_anonymous", "public_metrics", "secure_cookies", "metrics"}


@dataclass(frozen=True)
class WebSettings:
    """How the dashboard authenticates and what it exposes.

    >>> WebSettings(token="s3cret").auth_methods
    ('token',)
    """

    #: Bearer token for the JSON API and /metrics; also accepted on the login form.
    token: str | None = field(default=None, repr=False)
    #: Username and password for the login form.
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    #: Let anyone in without logging in (actions still need a CSRF token).
    allow_anonymous: bool = False
    #: Signs the session cookie; random per start when unset (sessions end on restart).
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    #: Serve /metrics without authentication (it holds class and queue names, nothing else).
    public_metrics: bool = False
    #: Serve /metrics at all.
    metrics: bool = True
    #: Mark the session cookie ``Secure`` (serve over HTTPS).
    secure_cookies: bool = False
    #: Seconds a login lasts.
    session_max_age: int = 12 * 3600
    #: Seconds between the pages' live updates.
    poll_interval: float = 5.0
    #: Largest request body accepted (bulk forms, uploads of feature pages).
    max_body: int = 16 * 1024 * 1024
    title: str = "Conveyor"

    def __post_init__(self) -> None:
        if (self.user is None) != (self.password is None):
            raise ConfigurationError(
                "web user and password go together: set both (CONVEYOR_WEB_USER and "
                "CONVEYOR_WEB_PASSWORD) or neither"
            )
        if not self.auth_methods and not self.allow_anonymous:
            raise ConfigurationError(
                "the web dashboard needs a login: set a token (--token / CONVEYOR_WEB_TOKEN) or "
                "a user and password (--user/--password), or pass --allow-anonymous explicitly"
            )
        if self.token is not None and len(self.token) < 8:
            raise ConfigurationError("the web token must be at least 8 characters long")
        if len(self.secret_key) < 16:
            raise ConfigurationError("the web secret key must be at least 16 characters long")
        if self.poll_interval <= 0:
            raise ConfigurationError(f"poll_interval must be > 0, got {self.poll_interval}")

    @property
    def auth_methods(self) -> tuple[str, ...]:
        """``"token"`` and/or ``"password"``: what the login form accepts."""
        out = ("token",) if self.token else ()
        return (*out, "password") if self.user is not None else out

    def credential_id(self) -> str:
        """A digest of the credentials: a session made under other credentials is not valid."""
        text = f"{self.token or ''}\0{self.user or ''}\0{self.password or ''}"
        return hmac.new(self.secret_key.encode(), text.encode(), hashlib.sha256).hexdigest()[:32]

    def replace(self, **changes: Any) -> WebSettings:
        """A copy with ``changes`` applied (``None`` values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def load(
        cls,
        settings: Settings | None = None,
        env: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> WebSettings:
        """Defaults < ``settings.extra["web"]`` < ``CONVEYOR_WEB_*`` < ``overrides``.

        Example: ``WebSettings.load(Settings.load(), token="from-a-vault")``.
        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        extra = settings.extra.get("web", {}) if settings is not None else {}
        if not isinstance(extra, Mapping):
            raise ConfigurationError('settings "extra.web" must be a JSON object')
        values.update(extra)
        for var, name in ENV.items():
            if env.get(var):
                values[name] = env[var]
        values.update({k: v for k, v in overrides.items() if v is not None and v != ""})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigurationError(
                f"unknown web setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        for name in _BOOLS & set(values):
            if isinstance(values[name], str):
                values[name] = values[name].strip().lower() in ("1", "true", "yes", "on")
        return cls(**values)


def redact_url(url: str | None) -> str:
    """A Redis URL fit to show: the password (and user) removed.

    >>> redact_url("redis://:hunter2@cache:6379/0")
    'redis://cache:6379/0'
    """
    if not url:
        return "embedded"
    return mask_url(url)  # also reads Sentinel URLs, whose host lists urlsplit refuses

"""Settings of the web dashboard: who may log in, the session secret, what is public, which
Host names are served and how failed logins are throttled.

Built explicitly (:class:`WebSettings`) or from the Conveyor settings' ``extra["web"]`` (the
JSON settings file) and ``CONVEYOR_WEB_*`` environment variables, read when called.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import ipaddress
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from conveyor.errors import ConfigurationError
from conveyor.redis_url import mask_url
from conveyor.settings import Settings
from conveyor.web import strength

#: Environment variable -> field.
ENV = {
    "CONVEYOR_WEB_TOKEN": "token",
    "CONVEYOR_WEB_USER": "user",
    "CONVEYOR_WEB_PASSWORD": "password",
    "CONVEYOR_WEB_SECRET": "secret_key",
    "CONVEYOR_WEB_ALLOW_ANONYMOUS": "allow_anonymous",
    "CONVEYOR_WEB_PUBLIC_METRICS": "public_metrics",
    "CONVEYOR_WEB_SECURE_COOKIES": "secure_cookies",
    "CONVEYOR_WEB_HOST": "host",
    "CONVEYOR_WEB_ALLOWED_HOSTS": "allowed_hosts",
    "CONVEYOR_WEB_MAX_BODY": "max_body",
    "CONVEYOR_WEB_LOG_CLIENT_IP": "log_client_ip",
}
_BOOLS = {"allow_anonymous", "public_metrics", "secure_cookies", "metrics", "log_client_ip"}
_INTS = {"session_max_age", "max_body", "login_max_failures"}
_FLOATS = {"poll_interval", "login_window", "login_delay"}
#: Host names that always mean this machine (accepted when the server is bound to loopback).
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
#: The longest wait before a failed login is answered (seconds).
MAX_LOGIN_DELAY = 5.0
_WILDCARDS = frozenset({"", "0.0.0.0", "::"})
_HOST_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback IP address (``127.0.0.0/8`` or ``::1``), not a name.

    >>> is_loopback("::1"), is_loopback("0.0.0.0"), is_loopback("localhost")
    (True, False, False)
    """
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def normalise_host(name: str) -> str | None:
    """A Host header's or an allow-list entry's host, lower case and without port or IPv6
    brackets; ``None`` when it is not a host name or IP address.

    >>> normalise_host("Dash.Example.com:8080"), normalise_host("[::1]:7433")
    ('dash.example.com', '::1')
    """
    text = name.strip().lower()
    if text.startswith("["):
        address, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not re.fullmatch(r":[0-9]{1,5}", rest)):
            return None
        text = address
    elif text.count(":") == 1:
        text, _, port = text.partition(":")
        if not re.fullmatch(r"[0-9]{1,5}", port):
            return None
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    return text if len(text) <= 253 and _HOST_NAME.match(text) else None


@dataclass(frozen=True)
class WebSettings:
    """How the dashboard authenticates, what it exposes and to whom.

    >>> WebSettings(token="c0a9f4e1d27b8356fe0c1ab94d7e2f38").auth_methods
    ('token',)
    """

    #: Bearer token for the JSON API and /metrics; also accepted on the login form.
    token: str | None = field(default=None, repr=False)
    #: Username and password for the login form.
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    #: Let anyone in without logging in (actions still need a CSRF token): only when bound to
    #: a loopback address, and only for clients connecting from this machine.
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
    #: Largest request body accepted on any route, in bytes (413 past it, counted as it
    #: arrives).
    max_body: int = 1024 * 1024
    title: str = "Conveyor"
    #: The address the server listens on (``conveyor web --host``): anonymous mode needs a
    #: loopback one, and it is the Host header accepted by default.
    host: str = "127.0.0.1"
    #: More Host header values to accept (the names clients use, e.g. behind a proxy); ``"*"``
    #: accepts any, which leaves DNS rebinding open.
    allowed_hosts: tuple[str, ...] = ()
    #: Write the client's address in the access log (personal data: off by default).
    log_client_ip: bool = False
    #: Failed logins per client, and per user, within ``login_window`` seconds; past it every
    #: login (and Bearer request) from there is refused with 429 until the window ends.
    login_max_failures: int = 10
    login_window: float = 900.0
    #: Seconds a failed login waits before it is answered; doubles with each failure, up to
    #: :data:`MAX_LOGIN_DELAY`.
    login_delay: float = 0.5

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
        if self.token is not None:
            strength.check_token(self.token)
        if self.password is not None:
            strength.check_password(self.password)
        if len(self.secret_key) < 16:
            raise ConfigurationError("the web secret key must be at least 16 characters long")
        self._check_numbers()
        self._check_hosts()

    def _check_numbers(self) -> None:
        for name in (*sorted(_INTS), *sorted(_FLOATS)):
            value = getattr(self, name)
            least = 0 if name == "login_delay" else 1e-9  # 0: answer failures at once
            if isinstance(value, bool) or not isinstance(value, int | float) or value < least:
                bound = ">= 0" if least == 0 else "> 0"
                raise ConfigurationError(
                    f"web setting {name} must be a number {bound}, got {value!r}"
                )

    def _check_hosts(self) -> None:
        hosts = (self.allowed_hosts,) if isinstance(self.allowed_hosts, str) else self.allowed_hosts
        normal: list[str] = []
        for entry in hosts:
            found = "*" if entry == "*" else normalise_host(str(entry))
            if found is None:
                raise ConfigurationError(
                    f"allowed host {entry!r} is not a host name or IP address (no scheme, path "
                    "or port: e.g. dashboard.example.com)"
                )
            normal.append(found)
        object.__setattr__(self, "allowed_hosts", tuple(normal))
        if self.allow_anonymous:
            if not is_loopback(self.host):
                raise ConfigurationError(
                    f"--allow-anonymous serves without a login, so only on a loopback address; "
                    f"the host is {self.host!r}: use --host 127.0.0.1 (or ::1), or set a token "
                    "(CONVEYOR_WEB_TOKEN) or a user and password instead"
                )
            outside = [h for h in normal if h not in LOOPBACK_NAMES]
            if outside:
                raise ConfigurationError(
                    f"--allow-anonymous accepts only loopback Host names; remove "
                    f"{', '.join(outside)} from the allowed hosts or set a token instead"
                )
        if self.host.strip("[]") in _WILDCARDS and not normal:
            raise ConfigurationError(
                f"the dashboard listens on all interfaces ({self.host!r}): name the host names "
                "clients use with --allowed-host (CONVEYOR_WEB_ALLOWED_HOSTS), so a DNS "
                "rebinding page cannot reach it"
            )

    @property
    def host_allow_list(self) -> frozenset[str] | None:
        """Host header values served (``None``: any): the bound host, the localhost names when
        it is a loopback address, and :attr:`allowed_hosts`.

        >>> sorted(WebSettings(allow_anonymous=True).host_allow_list)
        ['127.0.0.1', '::1', 'localhost']
        """
        if "*" in self.allowed_hosts:
            return None
        names = set(self.allowed_hosts)
        bound = normalise_host(self.host)
        if bound is not None and bound not in _WILDCARDS:
            names.add(bound)
        if is_loopback(self.host):
            names |= LOOPBACK_NAMES
        return frozenset(names)

    @property
    def auth_methods(self) -> tuple[str, ...]:
        """``"token"`` and/or ``"password"``: what the login form accepts."""
        out = ("token",) if self.token else ()
        return (*out, "password") if self.user is not None else out

    def credential_id(self) -> str:
        """A digest of the credentials: a session made under other credentials is not valid."""
        text = self._credentials().encode()
        return hmac.new(self.secret_key.encode(), text, hashlib.sha256).hexdigest()[:32]

    def _credentials(self) -> str:
        return f"{self.token or ''}\0{self.user or ''}\0{self.password or ''}"

    def client_digest(self, kind: str, value: str) -> str:
        """A keyed digest naming a client address or user in Redis (login throttling): the
        same in every process sharing the credentials, meaningless without them.

        Example: ``settings.client_digest("client", "192.0.2.7")``.
        """
        key = hashlib.sha256(self._credentials().encode()).digest()
        return hmac.new(key, f"{kind}\0{value}".encode(), hashlib.sha256).hexdigest()[:32]

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
        return cls(**{name: _coerce(name, value) for name, value in values.items()})


def _coerce(name: str, value: Any) -> Any:
    """A value from the environment or the settings file as the field's type."""
    if not isinstance(value, str):
        return tuple(value) if name == "allowed_hosts" and isinstance(value, list) else value
    if name in _BOOLS:
        return value.strip().lower() in ("1", "true", "yes", "on")
    if name == "allowed_hosts":
        return tuple(part.strip() for part in value.split(",") if part.strip())
    try:
        if name in _INTS:
            return int(value)
        if name in _FLOATS:
            return float(value)
    except ValueError:
        raise ConfigurationError(f"web setting {name} must be a number, got {value!r}") from None
    return value


def redact_url(url: str | None) -> str:
    """A Redis URL fit to show: the password (and user) removed.

    >>> redact_url("redis://:hunter2@cache:6379/0")
    'redis://cache:6379/0'
    """
    if not url:
        return "embedded"
    return mask_url(url)  # also reads Sentinel URLs, whose host lists urlsplit refuses

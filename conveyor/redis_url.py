"""Redis URLs: checking them, reading Sentinel URLs, and masking credentials for display.

This sits in the foundation layer (beside ``settings``) because settings validate a URL the
moment they are built; ``conveyor.redis.connection`` connects with what it returns.

A Sentinel URL names the Sentinels, not the primary, and the service they watch::

    redis+sentinel://[user:password@]host[:port][,host[:port]...]/service_name[/db]
    rediss+sentinel://...        (TLS to the Sentinels and to the primary)

The port defaults to 26379; IPv6 hosts go in brackets (``[::1]:26379``); a password holding
``@ / , :`` or ``%`` is percent-encoded. The credentials are those of the Redis primary and
replicas; Sentinels that ask for a password of their own get ``Settings.sentinel_username`` and
``sentinel_password`` (set in the environment or the config file, never in the URL).

>>> target = parse_sentinel_url("redis+sentinel://:s3cret@10.0.0.1,10.0.0.2:26380/jobs/2")
>>> target.sentinels, target.service, target.db
((('10.0.0.1', 26379), ('10.0.0.2', 26380)), 'jobs', 2)
>>> mask_url("redis+sentinel://:s3cret@10.0.0.1,10.0.0.2:26380/jobs/2")
'redis+sentinel://10.0.0.1,10.0.0.2:26380/jobs/2'
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from conveyor.errors import ConfigurationError

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
PLAIN_SCHEMES = ("redis", "rediss", "unix")
DEFAULT_SENTINEL_PORT = 26379

_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,252})")
_IPV6 = re.compile(r"\[[0-9A-Fa-f:.]+\]")
# Sentinel master names are single words in practice; refusing anything else keeps a stray
# character (a space, a quote) from becoming a service that silently never resolves.
_SERVICE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
#: Query options whose values are secrets (``?password=``, ``&ssl_password=``, ``token=``...).
_SECRET_OPTION = re.compile(r"[?&][^=&#]*(?:pass|pwd|secret|token|auth|credential)", re.I)
_FORMAT = "redis+sentinel://[user:password@]host:port[,host:port...]/service_name[/db]"


@dataclass(frozen=True)
class SentinelTarget:
    """What a Sentinel URL says: the Sentinels to ask, the service, and how to talk to the
    primary they name. ``repr`` leaves the password out."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def scheme_of(url: str) -> str:
    """The scheme of ``url`` in lower case (``""`` when there is none).

    >>> scheme_of("Redis+Sentinel://h/m")
    'redis+sentinel'
    """
    head, sep, _ = url.partition("://")
    return head.lower() if sep else ""


def is_sentinel_url(url: str) -> bool:
    """Whether ``url`` names Sentinels (``redis+sentinel://`` or ``rediss+sentinel://``).

    >>> is_sentinel_url("redis+sentinel://h:26379/mymaster"), is_sentinel_url("redis://h")
    (True, False)
    """
    return scheme_of(url) in SENTINEL_SCHEMES


def check_redis_url(url: str) -> None:
    """Raise :class:`ConfigurationError` naming what is wrong with ``url`` (the password is
    never repeated in the message).

    >>> check_redis_url("redis+sentinel://h:26379/mymaster")
    >>> check_redis_url("redis+sentinel://h:port/mymaster")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    conveyor.errors.ConfigurationError: Sentinel port 'port' in ... is not a number from 1 to...
    """
    scheme = scheme_of(url)
    if scheme in SENTINEL_SCHEMES:
        parse_sentinel_url(url)
        return
    if scheme not in PLAIN_SCHEMES:
        raise ConfigurationError(
            f"redis_url {mask_url(url)!r} must start with redis://, rediss://, unix://, "
            "redis+sentinel:// or rediss+sentinel://; leave it unset to use the embedded server"
        )
    if scheme != "unix":
        try:
            _ = urlsplit(url).port  # urllib checks the port only when asked for it
        except ValueError:
            raise ConfigurationError(
                f"the port in redis_url {mask_url(url)!r} is not a number from 0 to 65535; "
                "write e.g. redis://host:6379/0"
            ) from None


def parse_sentinel_url(url: str) -> SentinelTarget:
    """Read a ``redis+sentinel://`` URL; a malformed one raises :class:`ConfigurationError`
    naming the bad part.

    >>> parse_sentinel_url("rediss+sentinel://app:pw@[::1]:26379/main").tls
    True
    """
    scheme = scheme_of(url)
    if scheme not in SENTINEL_SCHEMES:
        raise ConfigurationError(f"{mask_url(url)!r} is not a Sentinel URL; write {_FORMAT}")
    shown = mask_url(url)
    # Credentials end at the last "@" (no host, service or db holds one), so a password is
    # never cut at a "/" or "?" it holds and then quoted in an error as a host or a path.
    userinfo, at, rest = url.partition("://")[2].rpartition("@")
    username, password = _credentials(userinfo) if at else (None, None)
    if "?" in rest or "#" in rest:
        raise ConfigurationError(
            f"Sentinel URL {shown} has a query or fragment; options are not supported there, "
            f"write {_FORMAT}"
        )
    hosts, slash, path = rest.partition("/")
    if not slash:
        raise ConfigurationError(
            f"Sentinel URL {shown} names no service; add /service_name after the hosts, "
            f"as in {_FORMAT}"
        )
    service, db = _service_and_db(path, shown)
    return SentinelTarget(
        sentinels=_sentinels(hosts, shown),
        service=service,
        db=db,
        tls=scheme == "rediss+sentinel",
        username=username,
        password=password,
    )


def mask_url(url: str) -> str:
    """``url`` fit to show or log: credentials and query options (which may hold secrets)
    removed. Works on Sentinel URLs with several hosts too.

    >>> mask_url("rediss://app:hunter2@cache:6380/0?ssl_cert_reqs=none")
    'rediss://cache:6380/0'
    >>> mask_url("unix:///run/redis.sock")
    'unix:///run/redis.sock'
    """
    head, sep, rest = url.partition("://")
    if not sep:
        # Not a URL at all: show no more than a scheme-like prefix, never what may be a secret.
        return "[not a URL]"
    at = rest.rfind("@")
    query = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    if at > query:
        # An "@" after a "?" or "#": in a query option (?password=p@ss) or in a password
        # holding a raw "?" (u:p?ss@host). Either reading could show a piece of a secret.
        return f"{head}://[masked]"
    # The last "@" ends the credentials even when an unencoded "/" or "@" sits in the
    # password: cutting there means no part of it survives as a path.
    return f"{head}://{rest[at + 1 : query]}"


def has_credentials(text: str) -> bool:
    """Whether ``text`` holds a URL with credentials (a user part) or a secret-looking query
    option (``password=``, ``token=``...): what must never go on a command line.

    >>> has_credentials("redis://:pw@cache/0"), has_credentials("redis://cache/0?db=1")
    (True, False)
    """
    _, sep, rest = text.partition("://")
    return bool(sep) and ("@" in rest or _SECRET_OPTION.search(rest) is not None)


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    user, colon, password = userinfo.partition(":")
    if not colon:
        # "redis://secret@host" is, by Redis convention, a password without a user.
        return None, unquote(user) or None
    return unquote(user) or None, unquote(password) or None


def _service_and_db(path: str, shown: str) -> tuple[str, int]:
    parts = path.split("/")
    if len(parts) > 2:
        raise ConfigurationError(
            f"Sentinel URL {shown} has too many path parts {path!r}; write /service_name or "
            "/service_name/db"
        )
    service = parts[0]
    if not _SERVICE.fullmatch(service):
        raise ConfigurationError(
            f"Sentinel service name {service!r} in {shown} is empty or holds characters other "
            "than letters, digits, '.', '_' and '-'; write the name given to 'sentinel monitor'"
        )
    if len(parts) == 1:
        return service, 0
    db = parts[1]
    if not db.isdigit() or not db.isascii() or int(db) > 10_000:
        raise ConfigurationError(
            f"database {db!r} in Sentinel URL {shown} is not a database number; write e.g. "
            f"/{service}/0"
        )
    return service, int(db)


def _sentinels(hosts: str, shown: str) -> tuple[tuple[str, int], ...]:
    if not hosts:
        raise ConfigurationError(f"Sentinel URL {shown} names no Sentinel host; write {_FORMAT}")
    out: list[tuple[str, int]] = []
    for item in hosts.split(","):
        pair = _host_port(item.strip(), shown)
        if pair not in out:
            out.append(pair)
    return tuple(out)


def _host_port(item: str, shown: str) -> tuple[str, int]:
    if item.startswith("["):
        end = item.find("]")
        host, rest = item[: end + 1], item[end + 1 :]
        port = rest[1:] if rest.startswith(":") else None
        valid = end > 0 and _IPV6.fullmatch(host) is not None and (rest == "" or port is not None)
        host = host[1:-1]
    else:
        host, colon, after = item.partition(":")
        port = after if colon else None
        valid = _HOSTNAME.fullmatch(host) is not None
    if not valid:
        raise ConfigurationError(
            f"Sentinel host {item!r} in {shown} is not a host name or address; write "
            "host:port, e.g. 10.0.0.5:26379 or [::1]:26379, hosts separated by commas"
        )
    if port is None:
        return host, DEFAULT_SENTINEL_PORT
    if not (port.isdigit() and port.isascii() and 0 < int(port) < 65536):
        raise ConfigurationError(
            f"Sentinel port {port!r} in {shown} is not a number from 1 to 65535; write "
            "host:port, e.g. 10.0.0.5:26379"
        )
    return host, int(port)

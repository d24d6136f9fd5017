"""Secrets made fit to show: the one function every surface uses to print a connection URL
(``conveyor redis url``, the demo, settings errors, ``repr(Settings)``, the dashboard, the
supervisor's refusal of secrets on child command lines).

It sits in the foundation layer, next to :mod:`conveyor.settings`, so that every layer can use
it. It over-masks rather than leak: a URL it cannot split cleanly loses its whole user part.

>>> mask_url("redis://default:hunter2@cache:6379/0")
'redis://default:***@cache:6379/0'
"""

from __future__ import annotations

import re

MASK = "***"

#: Query parameters whose values are secrets (``?password=``, ``&ssl_password=``, ``token=``...).
_SECRET_PARAM = re.compile(
    r"([?&])([^=&#]*(?:pass|pwd|secret|token|auth|credential|key)[^=&#]*)=([^&]*)",
    re.IGNORECASE,
)


def mask_url(url: str) -> str:
    """``url`` with its password (and any secret query parameter) replaced by ``***``; the
    scheme, user, host, port, path and other parameters stay, so it still says where.

    >>> mask_url("unix:///run/redis.sock?db=1&password=hunter2")
    'unix:///run/redis.sock?db=1&password=***'
    >>> mask_url("redis://cache:6379/0")
    'redis://cache:6379/0'
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    spans = [m.span(3) for m in _SECRET_PARAM.finditer(rest) if m[3]]
    # The last "@" ends the user part even when the password holds an unencoded "@", "/", "?"
    # or "#" (which end the host part for a URL parser): everything before it may be secret.
    at = rest.rfind("@")
    if at >= 0:
        user, colon, _ = rest[:at].partition(":")
        plain = not any(ch in user for ch in "/?#")
        if colon or not plain:
            spans.append((len(user) + 1 if plain else 0, at))
    out, shown_to = [], 0
    for start, end in sorted(spans):
        if end <= shown_to:
            continue  # inside a span masked already
        if start >= shown_to:
            out += [rest[shown_to:start], MASK]
        shown_to = end
    return f"{scheme}{sep}{''.join(out)}{rest[shown_to:]}"


def has_secret(text: str) -> bool:
    """Whether ``text`` holds a URL (``://``) with a password or secret parameter that
    :func:`mask_url` hides.

    >>> has_secret("--redis-url=redis://:pw@cache"), has_secret("--queue=default")
    (True, False)
    """
    return "://" in text and mask_url(text) != text


__all__ = ["MASK", "has_secret", "mask_url"]

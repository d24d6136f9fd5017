"""How guessable the dashboard's token and password are, checked when the settings are built.

The estimate is deliberately pessimistic: a random token scores a little under its true
entropy, while repeats, runs (``abcd``, ``1234``) and small alphabets score close to nothing.
It cannot know that ``correct horse`` is a phrase from a comic; it only stops the shapes that
are guessed first (short, repetitive, sequential, blank).
"""

from __future__ import annotations

import itertools
import math
from collections import Counter

from conveyor.errors import ConfigurationError

#: A token is a machine credential: 56 estimated bits (the lowest of 20,000 random
#: 32-hex-digit tokens scored 58; `openssl rand -hex 32` scores about 200).
MIN_TOKEN_BITS = 56.0
MIN_TOKEN_LENGTH = 16
#: A password is typed by a person: 12 characters and 40 estimated bits (four random words).
MIN_PASSWORD_LENGTH = 12
MIN_PASSWORD_BITS = 40.0
GENERATE = (
    "generate one with `openssl rand -hex 32` or "
    "`python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`"
)

_CLASSES = (
    (str.islower, 26),
    (str.isupper, 26),
    (str.isdigit, 10),
)


def _period(text: str) -> int:
    """The length of the shortest block ``text`` repeats (its own length if none)."""
    for size in range(1, len(text) // 2 + 1):
        if all(text[i] == text[i - size] for i in range(size, len(text))):
            return size
    return len(text)


def estimated_bits(secret: str) -> float:
    """A pessimistic entropy estimate of ``secret`` in bits.

    Characters that repeat a block or continue a run (a step of -1, 0 or +1 from the previous
    character) add nothing; each other character adds the lower of what its alphabet allows
    and what the string's character frequencies show.

    >>> estimated_bits("aaaaaaaaaaaaaaaaaaaa")
    0.0
    >>> estimated_bits("abcdefghijklmnopqrstuvwxyz") < 10
    True
    >>> estimated_bits("c0a9f4e1d27b8356fe0c1ab94d7e2f38") > 64
    True
    """
    if not secret:
        return 0.0
    text = secret[: _period(secret)]
    effective = 1 + sum(1 for a, b in itertools.pairwise(text) if abs(ord(b) - ord(a)) > 1)
    alphabet = sum(size for test, size in _CLASSES if any(test(c) for c in text))
    alphabet += 33 if any(not c.isalnum() for c in text) else 0
    counts = Counter(text)
    shannon = -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())
    if len(counts) == 1:
        return 0.0
    return round(effective * min(math.log2(max(alphabet, 2)), shannon), 1)


def check_token(token: str) -> None:
    """Refuse a blank, short or guessable web token, saying how to make a good one.

    >>> check_token("0123456789abcdef")
    Traceback (most recent call last):
    conveyor.errors.ConfigurationError: the web token is too guessable ...
    """
    if not token.strip() or any(c.isspace() for c in token):
        raise ConfigurationError(f"the web token must not be blank or contain spaces; {GENERATE}")
    bits = estimated_bits(token)
    if len(token) < MIN_TOKEN_LENGTH or bits < MIN_TOKEN_BITS:
        raise ConfigurationError(
            f"the web token is too guessable ({len(token)} characters, about {bits:.0f} bits; "
            f"at least {MIN_TOKEN_LENGTH} characters and {MIN_TOKEN_BITS:.0f} bits are "
            f"needed): {GENERATE}"
        )


def check_password(password: str) -> None:
    """Refuse a short, blank or guessable web password.

    >>> check_password("correct horse battery staple")
    """
    if not password.strip():
        raise ConfigurationError("the web password must not be blank")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ConfigurationError(
            f"the web password is {len(password)} characters long; use at least "
            f"{MIN_PASSWORD_LENGTH} (a few random words are easy to type and hard to guess)"
        )
    bits = estimated_bits(password)
    if bits < MIN_PASSWORD_BITS:
        raise ConfigurationError(
            f"the web password is too guessable (about {bits:.0f} bits, {MIN_PASSWORD_BITS:.0f} "
            "needed: avoid repeats and runs such as 'aaaa' or '1234'; a few random words work)"
        )

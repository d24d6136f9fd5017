"""Removing personal data and secrets from log events before they are written (SPEC IMP-2).

Three kinds of personal data are handled differently, because only some can be recognised:

* text patterns found anywhere (event text, every value, dict keys, tracebacks): e-mail
  addresses, bearer/basic credentials, ``password=...``-style pairs, credentials in URLs,
  well-known token formats and long high-entropy strings;
* values under *secret* key names (``password``, ``token``, ``api_key``, ``cookie``...);
* values under *personal* key names (``username``, ``author``, ``email``...): usernames look like
  any other word, so the only reliable rule is "never log a value under such a key". The list
  grows with :func:`register_personal_keys`.

The scrubber never raises: a value it cannot handle is replaced, not passed through.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

REDACTED = "[redacted]"
EMAIL = "[email]"

#: Key names (normalised: lower case, ``-`` and spaces as ``_``) whose values are people.
PERSONAL_KEYS: frozenset[str] = frozenset(
    {
        "user",
        "username",
        "user_name",
        "login",
        "author",
        "author_name",
        "committer",
        "assignee",
        "assignees",
        "reporter",
        "owner_name",
        "full_name",
        "first_name",
        "last_name",
        "display_name",
        "real_name",
        "nickname",
        "email",
        "e_mail",
        "email_address",
        "mail",
        "recipient",
        "recipients",
        "sender",
        "phone",
        "phone_number",
        "ip",
        "ip_address",
    }
)

#: Fragments that make a key name secret wherever they appear in it (``db_password``,
#: ``x-api-key``, ``access_token``...).
SECRET_KEY_PARTS: tuple[str, ...] = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "authorization",
    "api_key",
    "apikey",
    "access_key",
    "private_key",
    "cookie",
    "credential",
    "session_id",
)

_EMAIL_RE = re.compile(
    # Local part: RFC 5322 atom characters; domain: labels with at least one dot.
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"
)
#: A URL up to a space or quote; :func:`_url_credentials` redacts its user info up to the last
#: ``@`` (a password may hold a raw ``/`` or ``@``: a URL that is not one strictly).
_URL_USERINFO = r"(\b[A-Za-z][A-Za-z0-9+.-]*://)([^\s\"'<>]*@[^\s\"'<>]*)"
_AUTH_SCHEME = r"\b((?i:bearer|basic|token|digest))(\s+)[A-Za-z0-9._~+/=-]{6,}"
#: Key names that are secret only as a whole word (``db_pass``, ``pwd``), never inside
#: another word (``passed``, ``bypass``, ``compass``).
SECRET_KEY_WORDS: tuple[str, ...] = ("pass", "pwd")
_SECRET_WORDS = (
    "pass",  # password, passwd, passphrase too
    "pwd",
    "secret",
    "token",
    "api_key",
    "api-key",
    "apikey",
    "access_key",
    "access-key",
    "authorization",
    "cookie",
    "credential",
)
_SECRET_NAME = (
    r"(?:(?i:password|passwd|passphrase|secret|token|api[_-]?key|access[_-]?key|authorization"
    r"|cookie|credential)[\w-]*|(?<![A-Za-z])(?i:pass|pwd)(?![A-Za-z])[\w-]*)"
)
_SECRET_PAIR = (
    # key=value, key: value, "key": "value", 'key': 'value' (a quoted value is taken whole,
    # escaped quotes included). Starts at the word: "db_password=x" matches from "password".
    rf"({_SECRET_NAME})([\"']?\s*[:=]\s*)"
    r"(?:\"((?:[^\"\\]|\\.)*)\"|'((?:[^'\\]|\\.)*)'|([^\s\"'&,;}]+))"
)
#: A header line whose whole value is a credential (``Cookie: a=1; b=2`` has several).
_SECRET_HEADER = (
    r"(?im)^([ \t]*(?:proxy-)?(?:authorization|cookie|set-cookie|x-[\w-]*(?:token|key|secret"
    r"|auth)[\w-]*)[ \t]*:[ \t]*)(\S[^\r\n]*)"
)
_KNOWN_TOKEN = (
    r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|glpat-[A-Za-z0-9_-]{20,}"
    r"|xox[abprs]-[A-Za-z0-9-]{10,}|sk-[A-Za-z0-9_-]{20,}|AKIA[0-9A-Z]{16}"
    r"|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*)"
)
#: 40+ hex digits (SHA-1 sized and up): keys, HMACs. 32-digit UUIDs and 24-digit jids stay.
_LONG_HEX = r"\b[0-9a-fA-F]{40,}\b"
#: Runs from the base64/url-safe alphabet; redacted when they mix upper, lower case and digits.
_B64_RUN = r"[A-Za-z0-9+=_-]{32,}"

_URL_USERINFO_RE = re.compile(_URL_USERINFO)
_AUTH_SCHEME_RE = re.compile(_AUTH_SCHEME)
_SECRET_PAIR_RE = re.compile(_SECRET_PAIR)
_SECRET_HEADER_RE = re.compile(_SECRET_HEADER)
_KNOWN_TOKEN_RE = re.compile(_KNOWN_TOKEN)
_LONG_HEX_RE = re.compile(_LONG_HEX)
_B64_RUN_RE = re.compile(_B64_RUN)
#: Token-shaped runs; one search tells whether the three token rules need to run.
_TOKENISH_RE = re.compile(f"{_KNOWN_TOKEN}|{_B64_RUN}")
_SCHEME_WORDS = ("bearer", "basic", "token", "digest")


#: Top-level event fields set by the logging pipeline itself (clock, level, code, process).
_TRUSTED = ("timestamp", "level", "logger", "pid")


def _normalise(key: str) -> str:
    return key.strip().lower().replace("-", "_").replace(" ", "_")


def _mixed(run: str) -> bool:
    upper = lower = digit = False
    for ch in run:
        if ch.isdigit():
            digit = True
        elif ch.isupper():
            upper = True
        elif ch.islower():
            lower = True
    return upper and lower and digit


class Scrubber:
    """Replace personal data and secrets in any JSON-like value.

    ``hash_key`` turns replacements into short keyed hashes (``[email:1a2b3c4d]``) so lines about
    the same person can be correlated without revealing who it is; the key must stay secret
    (an unkeyed hash of an e-mail address is easy to reverse with a list of addresses).

    >>> Scrubber().scrub_text("mail ada@example.com, Bearer abcdef123456")
    'mail [email], Bearer [redacted]'
    >>> Scrubber().scrub_value({"username": "ada", "count": 3})
    {'username': '[redacted]', 'count': 3}
    """

    def __init__(
        self,
        *,
        personal_keys: Iterable[str] = PERSONAL_KEYS,
        hash_key: bytes | None = None,
    ) -> None:
        self.hash_key = hash_key
        self._personal = {_normalise(k) for k in personal_keys}
        self._kinds: dict[str, str] = {}  # key name -> "personal" | "secret" | "" (cached)
        self._lock = threading.Lock()

    # -- key names ------------------------------------------------------------------------------
    def add_personal_keys(self, keys: Iterable[str]) -> None:
        """Treat values under ``keys`` as personal data from now on."""
        with self._lock:
            self._personal |= {_normalise(k) for k in keys}
            self._kinds = {}

    @property
    def personal_keys(self) -> frozenset[str]:
        return frozenset(self._personal)

    def key_kind(self, key: str) -> str:
        """``"personal"``, ``"secret"`` or ``""`` for an ordinary key (cached per key name)."""
        kind = self._kinds.get(key)
        if kind is None:
            name = _normalise(key)
            if name in self._personal:
                kind = "personal"
            elif any(part in name for part in SECRET_KEY_PARTS) or any(
                word in SECRET_KEY_WORDS for word in re.split(r"[_.]", name)
            ):
                kind = "secret"
            else:
                kind = ""
            if len(self._kinds) < 10_000:  # bounded: keys are code, but be safe
                self._kinds[key] = kind
        return kind

    # -- replacements ---------------------------------------------------------------------------
    def _mark(self, label: str, original: str) -> str:
        if self.hash_key is None:
            return f"[{label}]"
        digest = hmac.new(self.hash_key, original.encode("utf-8", "replace"), hashlib.blake2b)
        return f"[{label}:{digest.hexdigest()[:8]}]"

    def scrub_text(self, text: str) -> str:
        """``text`` with e-mail addresses, credentials and token-like strings replaced."""
        # Each rule is gated by a plain substring test, so text with nothing to scrub (most
        # log lines) costs a few scans in C instead of a regex per rule.
        if len(text) < 6:
            return text
        if "://" in text:  # before e-mails: "user:pw@host.com" must not be read as one
            text = _URL_USERINFO_RE.sub(_url_credentials, text)
        if "@" in text:
            text = _EMAIL_RE.sub(lambda m: self._mark("email", m.group(0)), text)
        lowered = text.lower()
        if any(word in lowered for word in _SCHEME_WORDS):
            text = _AUTH_SCHEME_RE.sub(self._auth_credential, text)
        if ("=" in text or ":" in text) and any(word in lowered for word in _SECRET_WORDS):
            if ":" in text:
                text = _SECRET_HEADER_RE.sub(
                    lambda m: m.group(1) + self._mark("redacted", m.group(2)), text
                )
            text = _SECRET_PAIR_RE.sub(self._secret_pair, text)
        if len(text) >= 20 and _TOKENISH_RE.search(text) is not None:
            text = _KNOWN_TOKEN_RE.sub(lambda m: self._mark("redacted", m.group(0)), text)
            text = _LONG_HEX_RE.sub(lambda m: self._mark("redacted", m.group(0)), text)
            text = _B64_RUN_RE.sub(
                lambda m: self._mark("redacted", m.group(0)) if _mixed(m.group(0)) else m.group(0),
                text,
            )
        return text

    def _secret_pair(self, m: re.Match[str]) -> str:

        # Groups 3, 4 and 5: a double-quoted, single-quoted or bare value.
        for group, quote in ((3, '"'), (4, "'"), (5, "")):
            value = m.group(group)
            if value is not None:
                return f"{m.group(1)}{m.group(2)}{quote}{self._mark('redacted', value)}{quote}"
        return m.group(0)

    def _auth_credential(self, m: re.Match[str]) -> str:
        # "Basic auth is off" / "digest mismatch" are prose, not credentials: after a scheme
        # other than Bearer, an all-lower-case or Capitalised plain word is left alone.
        scheme, space = m.group(1), m.group(2)
        credential = m.group(0)[len(scheme) + len(space) :]
        prose = credential.isalpha() and (credential.islower() or credential.istitle())
        if prose and scheme.lower() != "bearer":
            return m.group(0)
        return scheme + space + self._mark("redacted", credential)

    def _redact(self, value: Any) -> Any:
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, str) and "@" in value and _EMAIL_RE.fullmatch(value.strip()):
            return self._mark("email", value.strip())
        return self._mark("redacted", str(value))

    def scrub_value(self, value: Any, *, personal: bool = False, depth: int = 0) -> Any:
        """A scrubbed copy of ``value`` (dicts, lists, tuples and sets are walked; other
        objects become their scrubbed ``str``). Inside a personal key, every string is
        replaced but numbers (ids) are kept."""
        if isinstance(value, str):
            return self._redact(value) if personal else self.scrub_text(value)
        if value is None or isinstance(value, (bool, int, float)):
            return value
        if depth > 20:
            return "[too deep]"
        if isinstance(value, Mapping):
            return self.scrub_mapping(value, personal=personal, depth=depth + 1)
        if isinstance(value, (list, tuple, set, frozenset)):
            return [self.scrub_value(v, personal=personal, depth=depth + 1) for v in value]
        if isinstance(value, (bytes, bytearray)):
            text = bytes(value).decode("utf-8", "replace")
            return self._redact(text) if personal else self.scrub_text(text)
        text = str(value)
        return self._redact(text) if personal else self.scrub_text(text)

    def scrub_mapping(
        self, mapping: Mapping[Any, Any], *, personal: bool = False, depth: int = 0
    ) -> dict[Any, Any]:
        """A scrubbed copy of ``mapping``; keys are scrubbed as text too."""
        out: dict[Any, Any] = {}
        for key, value in mapping.items():
            name = key if isinstance(key, str) else str(key)
            kind = self.key_kind(name)
            clean_key = self.scrub_text(name) if ("@" in name or len(name) >= 20) else key
            if kind == "secret":
                out[clean_key] = self._mark("redacted", str(value)) if value is not None else None
            else:
                out[clean_key] = self.scrub_value(
                    value, personal=personal or kind == "personal", depth=depth
                )
        return out

    def safe_scrub(self, event_dict: Mapping[str, Any]) -> dict[str, Any]:
        """Like :meth:`scrub_mapping` for a whole event, but never raises: if scrubbing fails,
        only the level, logger, timestamp and a note survive."""
        try:
            # Fields Conveyor itself sets from code and the clock hold nothing to scrub.
            trusted = {k: event_dict[k] for k in _TRUSTED if k in event_dict}
            if not trusted:
                return self.scrub_mapping(event_dict)
            rest = {k: v for k, v in event_dict.items() if k not in trusted}
            return {**trusted, **self.scrub_mapping(rest)}
        except Exception as exc:
            keep = ("timestamp", "level", "logger", "pid")
            safe: dict[str, Any] = {k: event_dict[k] for k in keep if k in event_dict}
            safe["event"] = f"[log line dropped: scrubbing failed with {type(exc).__name__}]"
            return safe


#: The scrubber used by every Conveyor log line (:func:`conveyor.logs.configure` sets its
#: ``hash_key``).
_default = Scrubber()


def default_scrubber() -> Scrubber:
    return _default


def register_personal_keys(*keys: str) -> None:
    """Never log values under these key names (in any event, at any nesting depth).

    Usernames cannot be recognised by a pattern, so an importer declares the fields of its
    records that name people::

        register_personal_keys("reviewer", "mentioned_users")
    """
    _default.add_personal_keys(keys)


def _url_credentials(m: re.Match[str]) -> str:
    """A URL with its user info (up to its last ``@``) redacted, or the whole URL when an
    ``@`` comes after a ``?`` or ``#`` (a query option's value, or a password holding a raw
    ``?``: either reading could leave a piece of a secret)."""

    rest = m.group(2)
    at = rest.rfind("@")
    query = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    if at > query:
        return f"{m.group(1)}[redacted]"
    return f"{m.group(1)}[redacted]@{rest[at + 1 :]}"

"""Routing rules: which queue and which store (Redis instance) a job goes to, decided by
configuration instead of job code, like GitLab's ``sidekiq.routing_rules`` with a store.

A rule is a selector, a queue and a store. Rules are tried in order and the first whose
selector matches decides: its queue replaces the job's (``None``: keep the job's queue) and
its store is where the job is pushed (``None``: the default store). No rule matching means
the job's own queue in the default store. A ``store=`` job option (declared or given with
``.set(store=...)``) wins over the rule's store.

Selectors: ``*`` (every job), or terms joined with ``&`` (all must hold), each
``attribute=value[,value...]`` (any value) or ``attribute!=value[,value...]`` (none of them),
where the attribute is ``class`` (the wire class name), ``queue`` (the job's queue before
routing) or ``tags`` (any of the job's tags).

>>> router = Router(parse_rules([["class=Heavy", None, "b"], ["queue=reports", "slow"]]))
>>> router.route("Heavy", "default")
Route(queue='default', store='b')
>>> router.route("Report", "reports")
Route(queue='slow', store='default')
>>> router.route("Other", "mail", store="b")
Route(queue='mail', store='b')

This module sits in the foundation layer, beside ``settings``, which checks the rules the
moment it is built.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from conveyor.errors import ConfigurationError

#: The store every job goes to unless routed elsewhere: ``Settings.redis_url``.
DEFAULT_STORE = "default"
#: Store names: short, lowercase, safe in a URL path and a log line.
STORE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
ATTRIBUTES = ("class", "queue", "tags")
_TERM = re.compile(r"^(class|queue|tags)\s*(!=|=)\s*(.+)$")
_RULE_KEYS = frozenset({"selector", "queue", "store"})
#: Distinct (class, queue, tags) the router remembers; class names can come from outside
#: (enqueue by name), so the memo is bounded.
MEMO_SIZE = 4096


def check_store_name(name: Any, what: str = "store name") -> str:
    """``name`` if it is a valid store name, else a :class:`ConfigurationError` naming it.

    >>> check_store_name("b")
    'b'
    """
    if not isinstance(name, str) or not STORE_NAME.match(name):
        raise ConfigurationError(
            f"{what} {name!r} is not valid: use 1-32 lowercase letters, digits, '_' or '-', "
            "starting with a letter or digit, e.g. 'b' or 'heavy-jobs'"
        )
    return name


@dataclass(frozen=True)
class Term:
    """One ``attribute=values`` (or ``!=``) part of a selector."""

    attribute: str
    values: frozenset[str]
    negated: bool = False

    def matches(self, class_name: str, queue: str, tags: Sequence[str]) -> bool:
        if self.attribute == "class":
            found = class_name in self.values
        elif self.attribute == "queue":
            found = queue in self.values
        else:
            found = any(tag in self.values for tag in tags)
        return found != self.negated


@dataclass(frozen=True)
class RoutingRule:
    """A parsed rule; build them with :func:`parse_rules` (or pass the raw form to
    ``Settings(routing_rules=...)``)."""

    selector: str
    queue: str | None = None
    store: str | None = None
    #: The selector's terms; empty for ``*``.
    terms: tuple[Term, ...] = field(default=(), compare=False, repr=False)

    def matches(self, class_name: str, queue: str, tags: Sequence[str]) -> bool:
        return all(term.matches(class_name, queue, tags) for term in self.terms)

    def to_json(self) -> list[str | None]:
        """The rule in its settings-file form, ``[selector, queue, store]``.

        >>> parse_rule(["class=Heavy", None, "b"], 0).to_json()
        ['class=Heavy', None, 'b']
        """
        return [self.selector, self.queue, self.store]


def parse_selector(selector: Any, where: str) -> tuple[Term, ...]:
    """The terms of a selector string (``()`` for ``*``).

    >>> [t.attribute for t in parse_selector("class=A&tags!=slow", "rule 1")]
    ['class', 'tags']
    """
    if not isinstance(selector, str) or not selector.strip():
        raise ConfigurationError(
            f"{where}: the selector must be a non-empty string such as 'class=Heavy', "
            f"'queue=reports', 'tags=slow' or '*', got {selector!r}"
        )
    if selector.strip() == "*":
        return ()
    terms: list[Term] = []
    for part in selector.split("&"):
        found = _TERM.match(part.strip())
        if found is None:
            raise ConfigurationError(
                f"{where}: {part.strip()!r} in selector {selector!r} is not "
                "'attribute=value' with attribute one of class, queue, tags (or '*' alone); "
                "join terms with '&', alternatives with ','"
            )
        attribute, operator, raw_values = found.groups()
        values = [v.strip() for v in raw_values.split(",")]
        if not all(values) or any(" " in v for v in values):
            raise ConfigurationError(
                f"{where}: selector {selector!r} has an empty or spaced value for {attribute}"
            )
        terms.append(Term(attribute, frozenset(values), operator == "!="))
    return tuple(terms)


def parse_rule(raw: Any, index: int) -> RoutingRule:
    """One rule from ``[selector, queue]``, ``[selector, queue, store]``,
    ``{"selector": ..., "queue": ..., "store": ...}`` or a :class:`RoutingRule`.

    >>> parse_rule({"selector": "queue=reports", "store": "b"}, 0).store
    'b'
    """
    where = f"routing rule {index + 1} ({_show(raw)})"
    if isinstance(raw, RoutingRule):
        raw = raw.to_json()
    if isinstance(raw, Mapping):
        unknown = sorted(set(raw) - _RULE_KEYS)
        if unknown or "selector" not in raw:
            raise ConfigurationError(
                f"{where}: a rule object has the keys selector, queue and store (only "
                f"selector required); unknown: {', '.join(map(str, unknown)) or 'none'}"
            )
        selector, queue, store = raw["selector"], raw.get("queue"), raw.get("store")
    elif isinstance(raw, list | tuple) and len(raw) in (2, 3):
        selector, queue, store = (*raw, None) if len(raw) == 2 else raw
    else:
        raise ConfigurationError(
            f"{where}: write a rule as [selector, queue] or [selector, queue, store], e.g. "
            '["class=Heavy", null, "b"] (null queue: keep the job\'s queue)'
        )
    terms = parse_selector(selector, where)
    if queue is not None and (not isinstance(queue, str) or queue != queue.strip()):
        raise ConfigurationError(
            f"{where}: the queue must be a queue name or null (keep the job's queue), got {queue!r}"
        )
    if store is not None and store != "":
        check_store_name(store, f"{where}: store")
    return RoutingRule(selector.strip(), queue or None, store or None, terms)


def parse_rules(raw: Any) -> tuple[RoutingRule, ...]:
    """Rules from a list (or a JSON array string, as ``CONVEYOR_ROUTING_RULES`` holds).

    >>> parse_rules('[["tags=slow", "slow"]]')[0].queue
    'slow'
    """
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise ConfigurationError(
                f"routing rules are not valid JSON ({exc}); write a JSON array such as "
                '[["class=Heavy", null, "b"], ["*", null]]'
            ) from None
    if raw is None:
        return ()
    if isinstance(raw, Mapping) or not isinstance(raw, Iterable) or isinstance(raw, bytes):
        raise ConfigurationError(
            f"routing rules must be a list of rules, got {type(raw).__name__}; e.g. "
            '[["class=Heavy", null, "b"]]'
        )
    return tuple(parse_rule(rule, i) for i, rule in enumerate(raw))


def _show(raw: Any) -> str:
    if isinstance(raw, RoutingRule):
        raw = raw.to_json()
    try:
        text = json.dumps(raw)
    except (TypeError, ValueError):
        text = repr(raw)
    return text if len(text) <= 80 else text[:79] + "…"


@dataclass(frozen=True)
class Route:
    """Where one job goes: the queue it is pushed to, in the named store."""

    queue: str
    store: str = DEFAULT_STORE


class Router:
    """Applies routing rules; thread-safe, with a bounded memo of decisions."""

    def __init__(self, rules: Sequence[RoutingRule] = ()) -> None:
        self.rules = tuple(rules)
        self._memo: dict[tuple[str, str, tuple[str, ...]], RoutingRule | None] = {}
        self._lock = threading.Lock()

    def rule_for(self, class_name: str, queue: str, tags: Sequence[str] = ()) -> RoutingRule | None:
        """The first rule matching the job, or ``None``.

        >>> Router(parse_rules([["tags=slow", "slow"]])).rule_for("A", "q", ["slow"]).queue
        'slow'
        """
        key = (class_name, queue, tuple(tags))
        try:
            return self._memo[key]
        except KeyError:
            pass
        found = next((r for r in self.rules if r.matches(class_name, queue, tags)), None)
        with self._lock:
            if len(self._memo) >= MEMO_SIZE:
                self._memo.clear()
            self._memo[key] = found
        return found

    def route(
        self, class_name: str, queue: str, tags: Sequence[str] = (), store: str | None = None
    ) -> Route:
        """Where a job of ``class_name`` on ``queue`` goes; ``store`` (a job option) wins
        over the rule's store.

        >>> Router(parse_rules([["*", None, "b"]])).route("A", "mail", store="c")
        Route(queue='mail', store='c')
        """
        rule = self.rule_for(class_name, queue, tags) if self.rules else None
        if rule is None:
            return Route(queue, store or DEFAULT_STORE)
        return Route(rule.queue or queue, store or rule.store or DEFAULT_STORE)

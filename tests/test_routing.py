"""Routing rules (conveyor/routing.py) and the store settings that carry them: parsing, first
match wins, and the errors a bad rule, store name or URL gets at load time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conveyor import Settings
from conveyor.errors import ConfigurationError
from conveyor.routing import MEMO_SIZE, Route, Router, parse_rules


def route(rules: list[object], cls: str, queue: str = "default", *tags: str) -> Route:
    return Router(parse_rules(rules)).route(cls, queue, tags)


def test_first_matching_rule_wins() -> None:
    rules: list[object] = [
        ["class=Heavy", None, "b"],
        ["class=Heavy", "never", None],
        ["queue=reports", "slow"],
        ["*", "catchall"],
    ]
    assert route(rules, "Heavy") == Route("default", "b")
    assert route(rules, "Report", "reports") == Route("slow", "default")
    assert route(rules, "Other", "mail") == Route("catchall", "default")


def test_no_rule_keeps_the_queue_in_the_default_store() -> None:
    assert route([["class=Heavy", None, "b"]], "Light", "mail") == Route("mail", "default")
    assert Router().route("Light", "mail") == Route("mail", "default")


def test_selector_terms_alternatives_negation_and_tags() -> None:
    rules: list[object] = [
        ["tags=slow,huge&queue!=urgent", "slow", "b"],
        ["class=A,B", "ab"],
    ]
    assert route(rules, "X", "default", "huge") == Route("slow", "b")
    assert route(rules, "X", "urgent", "huge") == Route("urgent", "default")
    assert route(rules, "B", "default") == Route("ab", "default")
    assert route(rules, "C", "default", "tiny") == Route("default", "default")


def test_store_option_wins_over_the_rule_store_but_not_its_queue() -> None:
    router = Router(parse_rules([["class=Heavy", "heavy", "b"]]))
    assert router.route("Heavy", "default", store="c") == Route("heavy", "c")


def test_rule_forms_object_gitlab_tuple_and_empty_values() -> None:
    rules = parse_rules(
        [{"selector": "class=A", "store": "b"}, ("queue=q", "", ""), ["*", None, None]]
    )
    assert [r.to_json() for r in rules] == [
        ["class=A", None, "b"],
        ["queue=q", None, None],
        ["*", None, None],
    ]


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ([["klass=A", None]], "'klass=A' in selector 'klass=A' is not 'attribute=value'"),
        ([["class=", None]], "routing rule 1"),
        ([["class=A&", None]], "'' in selector"),
        ([["", None]], "the selector must be a non-empty string"),
        ([["class=A"]], "write a rule as [selector, queue]"),
        ([["class=A", None, "B!"]], "store 'B!' is not valid"),
        ([["class=A", 5]], "the queue must be a queue name or null"),
        ([{"selector": "*", "shard": "b"}], "unknown: shard"),
        ({"class=A": "b"}, "routing rules must be a list of rules, got dict"),
        ("[[", "routing rules are not valid JSON"),
    ],
)
def test_bad_rules_are_refused_naming_the_rule(rules: object, message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_rules(rules)
    assert message in str(caught.value)


def test_settings_check_stores_store_and_rules_together() -> None:
    s = Settings(
        redis_url="redis://a:6379/0",
        stores={"b": "redis://b:6379/0"},
        store="b",
        routing_rules=[["class=Heavy", None, "b"]],
    )
    assert s.stores == {"b": "redis://b:6379/0"}
    assert s.routing_rules[0].store == "b"
    assert s.replace(store="default").routing_rules == s.routing_rules
    bad: list[tuple[dict[str, object], str]] = [
        ({"stores": {"B": "redis://b/0"}}, "store name 'B' is not valid"),
        ({"stores": {"default": "redis://b/0"}}, "stores may not define 'default'"),
        ({"stores": {"b": ""}}, "store 'b' needs a Redis URL"),
        ({"stores": {"b": "http://b/0"}}, "http"),
        ({"stores": {"b": "redis://a:6379/0"}}, "same URL as redis_url"),
        ({"store": "c"}, "store 'c' is not configured; known stores: default"),
        ({"routing_rules": [["class=A", None, "c"]]}, "routing rule 1 ('class=A') sends"),
        ({"stores": ["redis://b/0"]}, "stores must map store names to Redis URLs"),
    ]
    for changes, message in bad:
        with pytest.raises(ConfigurationError) as caught:
            Settings(redis_url="redis://a:6379/0", **changes)  # type: ignore[arg-type]
        assert message in str(caught.value), changes


def test_a_password_in_a_bad_store_url_is_not_shown() -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings(stores={"b": "redis+sentinel://:s3cret@h:port/m"})
    assert "s3cret" not in str(caught.value)


def test_stores_and_rules_from_environment_and_file(tmp_path: Path) -> None:
    env = {
        "CONVEYOR_REDIS_URL": "redis://a:6379/0",
        "CONVEYOR_STORES": json.dumps({"b": "redis://b:6379/0"}),
        "CONVEYOR_ROUTING_RULES": json.dumps([["tags=slow", "slow", "b"]]),
        "CONVEYOR_STORE": "b",
    }
    s = Settings.load(env=env)
    assert (s.stores, s.store, s.routing_rules[0].to_json()) == (
        {"b": "redis://b:6379/0"},
        "b",
        ["tags=slow", "slow", "b"],
    )
    path = tmp_path / "conveyor.json"
    path.write_text(
        json.dumps(
            {
                "redis_url": "redis://a:6379/0",
                "stores": {"c": "redis://c:6379/0"},
                "routing_rules": [{"selector": "class=Heavy", "store": "c"}],
            }
        )
    )
    s = Settings.load(path, env={})
    assert s.stores == {"c": "redis://c:6379/0"}
    assert s.routing_rules[0].to_json() == ["class=Heavy", None, "c"]
    with pytest.raises(ConfigurationError, match="CONVEYOR_STORES is not valid JSON"):
        Settings.load(env={"CONVEYOR_STORES": "{b: redis://b}"})


def test_the_memo_of_decisions_stays_bounded_against_endless_class_names() -> None:
    # Class names can come from outside (enqueue by name, push_payload): a flood of distinct
    # names must not grow the router's memory without end.
    router = Router(parse_rules([["class=Heavy", None, "b"]]))
    for n in range(3 * MEMO_SIZE):
        assert router.route(f"Hostile{n}", "default") == Route("default", "default")
    assert len(router._memo) <= MEMO_SIZE
    assert router.route("Heavy", "default") == Route("default", "b")


def test_store_passwords_stay_out_of_the_settings_repr() -> None:
    s = Settings(stores={"b": "redis://:s3cret@jobs-b:6379/0"})
    assert "s3cret" not in repr(s) and "jobs-b:6379" in repr(s)

"""Token and password strength (conveyor.web.strength), checked when WebSettings are built:
blank, short, repetitive and sequential secrets are refused with a message saying what to
do; generated ones pass."""

from __future__ import annotations

import secrets

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor import ConfigurationError
from conveyor.web import WebSettings
from conveyor.web.strength import estimated_bits


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"token": " " * 24}, "must not be blank"),
        ({"token": ""}, "needs a login"),
        ({"token": "a" * 40}, "too guessable"),
        ({"token": "0123456789abcdefghijklmnop"}, "too guessable"),
        ({"token": "xK9#"}, "4 characters"),
        ({"user": "ops", "password": ""}, "must not be blank"),
        ({"user": "ops", "password": "x"}, "1 characters long; use at least 12"),
        ({"user": "ops", "password": "aaaaaaaaaaaaaaaa"}, "too guessable"),
        ({"user": "ops", "password": "Password1234"}, "too guessable"),
    ],
)
def test_weak_credentials_are_refused_at_start(changes: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        WebSettings(**changes)


def test_generated_credentials_pass() -> None:
    for _ in range(200):
        assert WebSettings(token=secrets.token_hex(32))
        assert WebSettings(token=secrets.token_urlsafe(32))
    assert WebSettings(user="ops", password="correct horse battery staple")


@given(block=st.text(min_size=1, max_size=20), times=st.integers(2, 10))
def test_repeating_a_secret_adds_nothing(block: str, times: int) -> None:
    assert estimated_bits(block * times) <= estimated_bits(block)


@given(start=st.integers(100, 0x2FF), length=st.integers(1, 60), step=st.sampled_from([-1, 0, 1]))
def test_runs_score_next_to_nothing(start: int, length: int, step: int) -> None:
    run = "".join(chr(start + i * step) for i in range(length))
    assert estimated_bits(run) < 10

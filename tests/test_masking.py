"""One masking function for every URL Conveyor prints (issue #15): ``conveyor.masking``."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from conveyor import ConfigurationError, Settings
from conveyor.logs.scrub import Scrubber
from conveyor.masking import has_secret, mask_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://default:hunter2@cache:6379/0", "redis://default:***@cache:6379/0"),
        ("redis://:hunter2@cache", "redis://:***@cache"),
        (
            "rediss://u:hunter2@h:6380/1?ssl_cert_reqs=none",
            "rediss://u:***@h:6380/1?ssl_cert_reqs=none",
        ),
        (
            "unix:///run/redis.sock?db=2&password=hunter2",
            "unix:///run/redis.sock?db=2&password=***",
        ),
        ("unix://u:hunter2@/run/redis.sock", "unix://u:***@/run/redis.sock"),
        ("redis://cache:6379/0", "redis://cache:6379/0"),
        ("redis://alice@cache", "redis://alice@cache"),  # a user name alone is not a secret
        # Unencoded "@", "/", "?" in a password: everything up to the last "@" is hidden.
        ("redis://:p@ss@cache", "redis://:***@cache"),
        ("redis://u:a@b/c@cache/0", "redis://u:***@cache/0"),
        ("redis://:ab/cd@cache", "redis://:***@cache"),
        ("redis://ab?cd@cache", "redis://***@cache"),
        ("http://ops:hunter2@cache", "http://ops:***@cache"),
        ("ops:hunter2@cache:6379", "ops:***@cache:6379"),
    ],
)
def test_mask_url(url: str, shown: str) -> None:
    assert mask_url(url) == shown
    assert "hunter2" not in mask_url(url)
    assert has_secret(url) == (shown != url and "://" in url)


PASSWORD = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), min_size=4, max_size=40
)


@given(
    password=PASSWORD,
    user=st.sampled_from(["", "default", "ops"]),
    host=st.sampled_from(["cache:6379/0", "10.0.0.5", "[::1]:6380/2", "/run/redis.sock"]),
    scheme=st.sampled_from(["redis", "rediss", "unix"]),
    encode=st.booleans(),
)
@example(password="a@b/c?d#e", user="u", host="cache", scheme="redis", encode=False)
def test_no_password_survives_masking(
    password: str, user: str, host: str, scheme: str, encode: bool
) -> None:
    secret = quote(password, safe="") if encode else password
    url = f"{scheme}://{user}:{secret}@{host}"
    assert_hidden(secret, mask_url(url), f"{scheme}://{user}:***@{host}")
    value = secret.replace("&", "%26")
    query = mask_url(f"{scheme}://{host}?db=1&password={value}")
    assert_hidden(value, query, f"{scheme}://{host}?db=1&password=***")


def assert_hidden(secret: str, masked: str, visible: str) -> None:
    """No 4-character piece of ``secret`` shows, unless the URL shows it anyway."""
    for i in range(len(secret) - 3):
        piece = secret[i : i + 4]
        if piece not in visible:
            assert piece not in masked, (secret, masked)


def test_settings_errors_and_repr_mask_the_password() -> None:
    with pytest.raises(ConfigurationError) as refused:
        Settings(redis_url="http://ops:hunter2@cache:6379")
    assert "hunter2" not in str(refused.value)
    assert "'http://ops:***@cache:6379' must start with redis://" in str(refused.value)
    settings = Settings(redis_url="redis://ops:hunter2@cache", extra={"web": {"token": "t0k3n"}})
    shown = repr(settings)
    assert "redis_url='redis://ops:***@cache'" in shown and "concurrency=10" in shown
    assert "hunter2" not in shown and "t0k3n" not in shown


def test_log_lines_hide_url_passwords_too() -> None:
    # Logs go further than mask_url: the user part is personal data there (SPEC IMP-2).
    scrubber = Scrubber()
    for url in ("redis://ops:p@ss@cache:6379/0", "unix:///r.sock?db=1&password=p@ss"):
        line = scrubber.scrub_text(f"cannot reach {url}: refused")
        assert "p@ss" not in line and "ss@cache" not in line and "@ss" not in line, line

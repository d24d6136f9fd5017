"""Redis URLs: Sentinel URLs read, malformed ones refused naming the bad part, passwords never
shown (conveyor/redis_url.py)."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from conveyor import Settings
from conveyor.errors import ConfigurationError
from conveyor.logs.scrub import Scrubber
from conveyor.redis_url import (
    SentinelTarget,
    check_redis_url,
    has_credentials,
    is_sentinel_url,
    mask_url,
    parse_sentinel_url,
)

SECRET = "hunter2-Zq9"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "redis+sentinel://10.0.0.1:26379/mymaster",
            SentinelTarget(sentinels=(("10.0.0.1", 26379),), service="mymaster"),
        ),
        (
            "redis+sentinel://a,b:26380,c/jobs/3",
            SentinelTarget(
                sentinels=(("a", 26379), ("b", 26380), ("c", 26379)), service="jobs", db=3
            ),
        ),
        (
            "rediss+sentinel://app:p%40ss%2Fw@[::1]:26379,s2.example.com/main",
            SentinelTarget(
                sentinels=(("::1", 26379), ("s2.example.com", 26379)),
                service="main",
                tls=True,
                username="app",
                password="p@ss/w",
            ),
        ),
        (
            f"redis+sentinel://:{SECRET}@h/m",
            SentinelTarget(sentinels=(("h", 26379),), service="m", password=SECRET),
        ),
        (
            f"redis+sentinel://{SECRET}@h/m",  # a bare userinfo is a password, as in redis://
            SentinelTarget(sentinels=(("h", 26379),), service="m", password=SECRET),
        ),
        (
            "REDIS+SENTINEL://h:1,h:1/m",  # a repeated Sentinel is asked once
            SentinelTarget(sentinels=(("h", 1),), service="m"),
        ),
    ],
)
def test_sentinel_urls_are_read(url: str, expected: SentinelTarget) -> None:
    assert is_sentinel_url(url)
    assert parse_sentinel_url(url) == expected
    assert Settings(redis_url=url).redis_url == url


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("redis+sentinel://h:26379", "names no service; add /service_name"),
        ("redis+sentinel://h:26379/", "service name '' in"),
        ("redis+sentinel://h/my master", "service name 'my master'"),
        ("redis+sentinel://h/m/zero", "database 'zero' in Sentinel URL"),
        ("redis+sentinel://h/m/0/extra", "too many path parts 'm/0/extra'"),
        ("redis+sentinel:///m", "names no Sentinel host"),
        ("redis+sentinel://h1,,h2/m", "Sentinel host '' in"),
        ("redis+sentinel://h:port/m", "Sentinel port 'port' in"),
        ("redis+sentinel://h:0/m", "Sentinel port '0' in"),
        ("redis+sentinel://h:70000/m", "Sentinel port '70000' in"),
        ("redis+sentinel://h:/m", "Sentinel port '' in"),
        ("redis+sentinel://[::1/m", "Sentinel host '[::1' in"),
        ("redis+sentinel://bad host/m", "Sentinel host 'bad host' in"),
        ("redis+sentinel://h/m?ssl_cert_reqs=none", "has a query or fragment"),
        ("sentinel://h/m", "must start with redis://, rediss://, unix://, redis+sentinel://"),
        ("redis://cache:63x79/0", "the port in redis_url 'redis://cache:63x79/0'"),
    ],
)
def test_malformed_urls_name_the_bad_part(url: str, fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=f"^.*{_escape(fragment)}"):
        check_redis_url(url)
    with pytest.raises(ConfigurationError, match=_escape(fragment)):
        Settings(redis_url=url)


@pytest.mark.parametrize(
    "url",
    [
        f"redis+sentinel://app:{SECRET}@h:port/m",
        f"redis+sentinel://:{SECRET}@h/bad name",
        f"redis+sentinel://:{SECRET}@h/m?x=1",
        f"sentinel://:{SECRET}@h/m",
        f"redis://:{SECRET}@h:badport/0",
        # An unencoded "/" or "?" in the password must not leave half of it as a "path".
        f"redis+sentinel://:{SECRET[:4]}/{SECRET[4:]}@h:x/m",
        f"redis+sentinel://:{SECRET[:4]}?{SECRET[4:]}@h/m m",
        f"http{SECRET}",
    ],
)
def test_errors_never_repeat_the_password(url: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings(redis_url=url)
    message = str(caught.value)
    assert SECRET not in message and SECRET[4:] not in message, message


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"redis://:{SECRET}@cache:6379/0", "redis://cache:6379/0"),
        (f"rediss://user:{SECRET}@cache:6380/1?ssl_cert_reqs=none", "rediss://cache:6380/1"),
        (f"redis+sentinel://u:{SECRET}@a:1,b:2/m/0", "redis+sentinel://a:1,b:2/m/0"),
        (f"redis://:{SECRET[:4]}/{SECRET[4:]}@cache/0", "redis://cache/0"),
        ("unix:///run/redis.sock", "unix:///run/redis.sock"),
        (SECRET, "[not a URL]"),
    ],
)
def test_mask_url_removes_credentials(url: str, shown: str) -> None:
    assert mask_url(url) == shown


@pytest.mark.parametrize("cut", ["/", "?", "@", ","])
def test_a_password_holding_url_characters_is_read_whole(cut: str) -> None:
    password = SECRET[:4] + cut + SECRET[4:]
    target = parse_sentinel_url(f"redis+sentinel://app:{password}@h:1,g:2/m/1")
    assert target.password == password
    assert (target.sentinels, target.service, target.db) == ((("h", 1), ("g", 2)), "m", 1)


def test_the_target_repr_leaves_the_password_out() -> None:
    target = parse_sentinel_url(f"redis+sentinel://:{SECRET}@h/m")
    assert SECRET not in repr(target)


def _escape(text: str) -> str:
    import re

    return re.escape(text)


# -- one masking function for every surface (issue #15) ----------------------------------------
PASSWORD = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), min_size=4, max_size=40
)


def assert_hidden(secret: str, masked: str, visible: str) -> None:
    """No 4-character piece of ``secret`` shows, unless the URL shows it anyway."""
    for i in range(len(secret) - 3):
        piece = secret[i : i + 4]
        if piece not in visible:
            assert piece not in masked, (secret, masked)


@given(
    password=PASSWORD,
    user=st.sampled_from(["", "default", "ops"]),
    host=st.sampled_from(["cache:6379/0", "10.0.0.5", "[::1]:6380/2", "/run/redis.sock", "a,b/m"]),
    scheme=st.sampled_from(["redis", "rediss", "unix", "redis+sentinel"]),
    encode=st.booleans(),
)
@example(password="a@b/c?d#e", user="u", host="cache", scheme="redis", encode=False)
def test_no_piece_of_a_password_survives_masking(
    password: str, user: str, host: str, scheme: str, encode: bool
) -> None:
    secret = quote(password, safe="") if encode else password
    for url in (f"{scheme}://{user}:{secret}@{host}", f"{scheme}://{secret}@{host}"):
        assert_hidden(secret, mask_url(url), f"{scheme}://{host}")
        assert has_credentials(url)
    value = secret.replace("&", "%26")
    assert_hidden(value, mask_url(f"{scheme}://{host}?db=1&password={value}"), f"{scheme}://{host}")
    assert has_credentials(f"{scheme}://{host}?db=1&password={value}")


def test_settings_repr_hides_the_password_and_extra_values() -> None:
    settings = Settings(redis_url=f"redis://ops:{SECRET}@cache", extra={"web": {"token": "t0k3n"}})
    shown = repr(settings)
    assert "redis_url='redis://cache'" in shown and "concurrency=10" in shown
    assert SECRET not in shown and "t0k3n" not in shown and "'web': '...'" in shown


def test_log_lines_hide_url_passwords_too() -> None:
    scrubber = Scrubber()
    for url in ("redis://ops:p@ss@cache:6379/0", "unix:///r.sock?db=1&password=p@ss"):
        line = scrubber.scrub_text(f"cannot reach {url}: refused")
        assert "p@ss" not in line and "@ss" not in line, line


def test_an_at_sign_after_a_question_mark_masks_the_whole_url() -> None:
    # Either the password holds a raw "?" (then "cdef?gh" is part of it) or the "@" sits in a
    # query option: no reading may show a piece of a secret, so nothing past the scheme shows.
    for url in ("redis://u:ab@cdef?gh@host/0", "redis://host/0?password=p@ssword"):
        assert mask_url(url) == "redis://[masked]"
        line = Scrubber().scrub_text(f"cannot reach {url}: refused")
        assert "cdef" not in line and "ssword" not in line, line
    assert mask_url("redis://u:p@ss/word@host:6379/0?db=1") == "redis://host:6379/0"

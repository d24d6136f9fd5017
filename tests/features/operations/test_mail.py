"""The failure e-mail (conveyor.features.operations.mail) and its settings: rendering, and
delivery to a real SMTP server (aiosmtpd) in plain, STARTTLS+AUTH and implicit TLS+AUTH modes."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.mail import PASSWORD, USER, make_certificate, smtp_server

from conveyor.errors import ConfigurationError, MailError
from conveyor.features.operations import MailSettings, OperationsSettings, entity_link
from conveyor.features.operations.mail import render_failure_email, send
from conveyor.redis.operations import Operation

OP = Operation(
    id="0123456789abcdef01234567",
    operation_type="attribute_update",
    user_id="7",
    parameters={"secret_note": "do not mail me"},
    status="running",
    total_items=5,
    successful_items=3,
    failed_items=2,
    created_at=1_700_000_000.0,
    completed_at=1_700_000_060.0,
)


def item(i: int, name: str = "web", message: str = "Permission denied") -> dict[str, Any]:
    return {
        "entity_id": i,
        "entity_type": "Project",
        "entity_name": name,
        "entity_full_path": f"acme/{name}",
        "error_message": message,
        "error_code": "service_error",
        "created_at": 1_700_000_001.0,
    }


def message(**overrides: Any) -> Any:
    kwargs: dict[str, Any] = {
        "base_url": "https://gitlab.example.com",
        "sender": "noreply@example.com",
        "recipient": "ada@example.com",
        "title": "Security attribute update",
    }
    kwargs.update(overrides)
    return render_failure_email(OP, [item(1), item(2, "api")], **kwargs)


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    made = make_certificate(tmp_path_factory.mktemp("smtp-cert"))
    if made is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    return made


@pytest.fixture
def starttls(cert: tuple[Path, Path]) -> Iterator[tuple[Any, int]]:
    with smtp_server("starttls", cert) as server:
        yield server


def test_plain_smtp_delivers_both_parts() -> None:
    with smtp_server() as (received, port):
        send(message(), MailSettings(host="127.0.0.1", port=port, sender="noreply@example.com"))
    assert received.count() == 1
    _, rcpts, got = received.messages[0]
    assert rcpts == ["ada@example.com"]
    assert got["Subject"] == "Security attribute update: 2 of 5 items failed"
    assert got.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in got.iter_parts()] == ["text/plain", "text/html"]


def test_starttls_with_auth(starttls: tuple[Any, int], cert: tuple[Path, Path]) -> None:
    received, port = starttls
    settings = MailSettings(
        host="localhost",
        port=port,
        security="starttls",
        username=USER,
        password=PASSWORD,
        sender="noreply@example.com",
        ca_file=str(cert[0]),
    )
    send(message(), settings)
    assert received.count() == 1
    assert "acme/api" in received.messages[0][2].get_body(("plain",)).get_content()


def test_starttls_refuses_a_wrong_password_without_naming_the_recipient(
    starttls: tuple[Any, int], cert: tuple[Path, Path]
) -> None:
    received, port = starttls
    settings = MailSettings(
        host="localhost",
        port=port,
        security="starttls",
        username=USER,
        password="wrong",
        ca_file=str(cert[0]),
    )
    with pytest.raises(MailError, match="refused the login") as info:
        send(message(), settings)
    assert f"localhost:{port}" in str(info.value) and "ada@" not in str(info.value)
    assert received.count() == 0


def test_starttls_verifies_the_certificate(starttls: tuple[Any, int]) -> None:
    _, port = starttls
    settings = MailSettings(
        host="localhost", port=port, security="starttls", username=USER, password=PASSWORD
    )
    with pytest.raises(MailError, match="SSLCertVerificationError"):
        send(message(), settings)  # self-signed, and no ca_file given


def test_plain_connection_to_a_server_requiring_starttls_fails(starttls: tuple[Any, int]) -> None:
    _, port = starttls
    with pytest.raises(MailError, match=f"127.0.0.1:{port}"):
        send(message(), MailSettings(host="127.0.0.1", port=port))


def test_implicit_tls_with_auth(cert: tuple[Path, Path]) -> None:
    with smtp_server("tls", cert) as (received, port):
        settings = MailSettings(
            host="localhost",
            port=port,
            security="tls",
            username=USER,
            password=PASSWORD,
            ca_file=str(cert[0]),
        )
        send(message(), settings)
        with pytest.raises(MailError, match="refused the login"):
            send(message(), dataclasses.replace(settings, password="wrong"))
    assert received.count() == 1


def test_nothing_listening_is_a_clear_error() -> None:
    with pytest.raises(MailError, match=r"127\.0\.0\.1:1 \(none\) failed: ConnectionRefusedError"):
        send(message(), MailSettings(host="127.0.0.1", port=1, timeout=2))


def test_rendering_escapes_quotes_links_and_keeps_parameters_out() -> None:
    op_items = [item(1, "web <b>app</b>", "bad & <worse>"), item(2, "my project")]
    got = render_failure_email(
        OP,
        op_items,
        base_url="https://gitlab.example.com/",
        sender="noreply@example.com",
        recipient="ada@example.com",
    )
    assert got["Subject"] == "attribute_update: 2 of 5 items failed", "default title: the type"
    html = got.get_body(("html",)).get_content()
    text = got.get_body(("plain",)).get_content()
    assert "web &lt;b&gt;app&lt;/b&gt;" in html and "bad &amp; &lt;worse&gt;" in html
    assert "<b>app</b>" not in html
    assert 'href="https://gitlab.example.com/acme/my%20project"' in html
    assert "https://gitlab.example.com/acme/my%20project" in text
    for private in ("secret_note", "do not mail me", "user"):
        assert private not in text and private not in html


def test_long_failure_lists_are_cut_and_counted() -> None:
    many = dataclasses.replace(OP, failed_items=1500, total_items=1500)
    got = render_failure_email(
        many,
        [item(i, f"p{i}") for i in range(1000)],
        base_url="https://x.example",
        sender="a@example.com",
        recipient="b@example.com",
        max_items=10,
    )
    text = got.get_body(("plain",)).get_content()
    assert text.count("Error: ") == 10
    assert "... and 1490 more failed item(s) not listed here." in text


def test_entity_link_joins_base_and_path() -> None:
    assert (
        entity_link("https://h.example/gitlab/", "/g/sub/p") == "https://h.example/gitlab/g/sub/p"
    )


def test_settings_from_environment() -> None:
    env = {
        "CONVEYOR_SMTP_HOST": "smtp.example.com",
        "CONVEYOR_SMTP_SECURITY": "TLS",
        "CONVEYOR_SMTP_USERNAME": "u",
        "CONVEYOR_SMTP_PASSWORD": "p",
        "CONVEYOR_SMTP_SENDER": "ops@example.com",
        "CONVEYOR_OPERATIONS_BASE_URL": "https://gitlab.example.com",
        "CONVEYOR_OPERATIONS_FLAG": "my_flag",
        "CONVEYOR_OPERATIONS_BATCH_SIZE": "250",
    }
    settings = OperationsSettings.from_env(env)
    assert (settings.base_url, settings.flag, settings.batch_size) == (
        "https://gitlab.example.com",
        "my_flag",
        250,
    )
    mail = settings.mail
    assert (mail.host, mail.security, mail.effective_port, mail.sender) == (
        "smtp.example.com",
        "tls",
        465,
        "ops@example.com",
    )
    assert "password" not in repr(mail), "the password is kept out of repr"
    assert OperationsSettings.from_env({}).flag == "security_bulk_operations_notifications"


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"CONVEYOR_SMTP_SECURITY": "ssl3"}, "SMTP security 'ssl3' is unknown"),
        ({"CONVEYOR_SMTP_PORT": "abc"}, "CONVEYOR_SMTP_PORT='abc' is not a valid int"),
        ({"CONVEYOR_SMTP_USERNAME": "u"}, "needs both a username and a password"),
        ({"CONVEYOR_SMTP_SENDER": "nobody"}, "is not an e-mail address"),
        ({"CONVEYOR_OPERATIONS_BASE_URL": "gitlab.example.com"}, "must start with http"),
        ({"CONVEYOR_OPERATIONS_BATCH_SIZE": "0"}, "batch_size must be 1-5000"),
    ],
)
def test_bad_settings_are_refused(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigurationError, match=needle):
        OperationsSettings.from_env(env)

"""A real SMTP server for tests (aiosmtpd), optionally with STARTTLS, implicit TLS and AUTH,
collecting what it receives so tests read the delivered messages."""

from __future__ import annotations

import email
import email.policy
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from support import free_port

USER = "mailer"
PASSWORD = "s3cret-for-tests"


@dataclass
class Received:
    """Messages the server accepted: (envelope sender, recipients, parsed message)."""

    messages: list[tuple[str, list[str], EmailMessage]] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        with self.lock:
            self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), parsed))
        return "250 Message accepted"

    def count(self) -> int:
        with self.lock:
            return len(self.messages)


def make_certificate(directory: Path) -> tuple[Path, Path] | None:
    """A self-signed certificate for localhost and 127.0.0.1 (None without the openssl CLI)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def _authenticator(
    server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == USER.encode()
        and auth_data.password == PASSWORD.encode()
    )
    return AuthResult(success=ok, handled=False)


@contextmanager
def smtp_server(
    mode: str = "plain", cert: tuple[Path, Path] | None = None
) -> Iterator[tuple[Received, int]]:
    """Run an SMTP server on 127.0.0.1: ``plain``, ``starttls`` (STARTTLS + AUTH required) or
    ``tls`` (implicit TLS + AUTH). Yields the collector and the port."""
    received = Received()
    port = free_port()
    kwargs: dict[str, Any] = {}
    if mode != "plain":
        assert cert is not None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(cert[0]), str(cert[1]))
        kwargs.update(authenticator=_authenticator, auth_required=True)
        if mode == "starttls":
            kwargs.update(tls_context=context, require_starttls=True, auth_require_tls=True)
        else:
            # aiosmtpd only counts STARTTLS as TLS for AUTH; the socket here is TLS already.
            # (so AUTH is offered, not required, or aiosmtpd warns; a wrong password still fails).
            kwargs.update(ssl_context=context, auth_require_tls=False, auth_required=False)
    controller = Controller(received, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    try:
        yield received, port
    finally:
        controller.stop()

"""The failure e-mail of a bulk operation (SPEC OPS-3): rendering and sending over SMTP.

The message holds the operation's type, its totals and the failed items with their errors and
links (``base_url`` + the entity's full path), as a text part and an HTML part. It holds no
other personal data: no user id, no operation parameters; the recipient appears only in the
``To`` header and is never logged.

>>> message = render_failure_email(op, items, base_url="https://gitlab.example.com",
...                                sender="noreply@example.com", recipient="ada@example.com",
...                                title="Security attribute update")   # doctest: +SKIP
>>> send(message, MailSettings(host="smtp.example.com", security="starttls"))  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import html
import logging
import smtplib
import ssl
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any
from urllib.parse import quote

from conveyor.errors import MailError
from conveyor.features.operations.model import UNEXPECTED_ERROR, UNEXPECTED_MESSAGE
from conveyor.features.operations.settings import MailSettings
from conveyor.redis.operations import Operation

log = logging.getLogger("conveyor.operations.mail")


def entity_link(base_url: str, full_path: str) -> str:
    """The link to an entity: ``base_url`` + ``/`` + its full path (URL-quoted).

    >>> entity_link("https://gitlab.example.com/", "acme/web app")
    'https://gitlab.example.com/acme/web%20app'
    """
    return f"{base_url.rstrip('/')}/{quote(full_path.strip('/'), safe='/')}"


def subject(title: str, op: Operation) -> str:
    """``<title>: 3 of 120 items failed``."""
    return f"{title}: {op.failed_items} of {op.total_items} items failed"


def render_failure_email(
    op: Operation,
    failed_items: Sequence[dict[str, Any]],
    *,
    base_url: str,
    sender: str,
    recipient: str,
    title: str | None = None,
    max_items: int = 1000,
) -> EmailMessage:
    """The e-mail for an operation with failures: a text part and an HTML alternative.

    ``title`` names the operation type in the subject (default: the operation_type). At most
    ``max_items`` failed items are listed; the rest are counted in a closing line.
    """
    label = title or op.operation_type
    shown = list(failed_items[:max_items])
    hidden = max(0, op.failed_items - len(shown))
    message = EmailMessage()
    message["Subject"] = subject(label, op)
    message["From"] = sender
    message["To"] = recipient
    message["Date"] = formatdate(localtime=False)
    # Deterministic, so a resent e-mail (at-least-once completion) is recognisable as the same.
    message["Message-ID"] = f"<bulk-operation.{op.id}@{_domain(sender)}>"
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(_text(label, op, shown, hidden, base_url))
    message.add_alternative(_html(label, op, shown, hidden, base_url), subtype="html")
    return message


def _error_text(item: dict[str, Any]) -> str:
    """What the user reads: the service's message, or a fixed sentence for an unexpected
    error (its exception may quote anything; the details are in the worker's log)."""
    if item.get("error_code") == UNEXPECTED_ERROR:
        return f"{UNEXPECTED_MESSAGE}."
    return str(item.get("error_message", ""))


def _domain(address: str) -> str:
    return address.rpartition("@")[2].strip("> ") or "localhost"


def _when(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _text(
    label: str, op: Operation, items: list[dict[str, Any]], hidden: int, base_url: str
) -> str:
    lines = [
        f"{label} finished with failures.",
        "",
        f"Operation: {op.operation_type} ({op.id}), started {_when(op.created_at)}",
        f"Total:     {op.total_items}",
        f"Succeeded: {op.successful_items}",
        f"Failed:    {op.failed_items}",
        "",
        "Failed items:",
    ]
    for item in items:
        path = str(item.get("entity_full_path", ""))
        lines += [
            "",
            f"- {item.get('entity_type', 'Item')} {item.get('entity_name', '')} ({path})",
            f"  {entity_link(base_url, path)}",
            f"  Error: {_error_text(item)} [{item.get('error_code', '')}]",
        ]
    if hidden:
        lines += ["", f"... and {hidden} more failed item(s) not listed here."]
    return "\n".join(lines) + "\n"


def _html(
    label: str, op: Operation, items: list[dict[str, Any]], hidden: int, base_url: str
) -> str:
    e = html.escape
    rows = []
    for item in items:
        path = str(item.get("entity_full_path", ""))
        rows.append(
            "<tr>"
            f"<td>{e(str(item.get('entity_type', 'Item')))}</td>"
            f'<td><a href="{e(entity_link(base_url, path))}">'
            f"{e(str(item.get('entity_name', '')))}</a><br><small>{e(path)}</small></td>"
            f"<td>{e(_error_text(item))}</td>"
            f"<td><code>{e(str(item.get('error_code', '')))}</code></td>"
            "</tr>"
        )
    more = f"<p>... and {hidden} more failed item(s) not listed here.</p>" if hidden else ""
    return (
        "<!DOCTYPE html><html><body>"
        f"<h2>{e(label)} finished with failures</h2>"
        f"<p>Operation <code>{e(op.operation_type)}</code> ({e(op.id)}), started "
        f"{e(_when(op.created_at))}</p>"
        "<table><tr><th>Total</th><th>Succeeded</th><th>Failed</th></tr>"
        f"<tr><td>{op.total_items}</td><td>{op.successful_items}</td>"
        f"<td>{op.failed_items}</td></tr></table>"
        "<h3>Failed items</h3>"
        "<table><tr><th>Type</th><th>Item</th><th>Error</th><th>Code</th></tr>"
        + "".join(rows)
        + "</table>"
        + more
        + "</body></html>"
    )


def send(message: EmailMessage, settings: MailSettings) -> None:
    """Send ``message`` through the SMTP server of ``settings`` (STARTTLS, implicit TLS and
    AUTH as configured). Raises :class:`~conveyor.errors.MailError`, naming the server but
    never the addresses."""
    where = f"{settings.host}:{settings.effective_port}"
    try:
        context = ssl.create_default_context(cafile=settings.ca_file)
        smtp: smtplib.SMTP
        if settings.security == "tls":
            smtp = smtplib.SMTP_SSL(
                settings.host, settings.effective_port, timeout=settings.timeout, context=context
            )
        else:
            smtp = smtplib.SMTP(settings.host, settings.effective_port, timeout=settings.timeout)
        with smtp:
            if settings.security == "starttls":
                smtp.starttls(context=context)
            if settings.username is not None and settings.password is not None:
                smtp.login(settings.username, settings.password)
            smtp.send_message(message)
    except smtplib.SMTPAuthenticationError as exc:
        raise MailError(
            f"SMTP server {where} refused the login ({exc.smtp_code}); check "
            "CONVEYOR_SMTP_USERNAME and CONVEYOR_SMTP_PASSWORD"
        ) from None
    except smtplib.SMTPRecipientsRefused:
        # smtplib's message lists the addresses: keep them out of logs and retry records.
        raise MailError(f"SMTP server {where} refused the recipient") from None
    except (smtplib.SMTPException, ssl.SSLError, OSError) as exc:
        raise MailError(
            f"sending through SMTP server {where} ({settings.security}) failed: "
            f"{type(exc).__name__}; check CONVEYOR_SMTP_HOST/PORT/SECURITY and that the server "
            "is up"
        ) from None
    log.info("failure e-mail sent through %s", where)

"""Fixture project exports for the import tests, built from :data:`USERS`. The session log scan
(tests/support/log_scan.py) fails the test run if any string of :data:`PERSONAL_DATA` reaches a log
line (SPEC IMP-2: no usernames or e-mail addresses in logs, ever). Issue and comment authors and the
project owner are these people, so every import test feeds them through the importer.

The values are deliberately distinctive so the scan has no false positives from ordinary words.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conveyor.features.imports.project.format import write_export

#: Fixture people: login name, display name and e-mail address.
USERS: list[dict[str, str]] = [
    {"username": "ada_lovelace_fx", "name": "Ada Lovelace-Fixture", "email": "ada.fx@example.com"},
    {"username": "grace.hopper.fx", "name": "Grace Hopper-Fixture", "email": "grace+fx@ex.org"},
    {"username": "linus_t_fx", "name": "Linus Torvalds-Fixture", "email": "linus.fx@kernel.test"},
    {"username": "jürgen_fx", "name": "Jürgen Müller-Fixture", "email": "juergen.fx@example.de"},
    {"username": "mallory-fx-42", "name": "Mallory Fixture", "email": "MALLORY.FX@Example.NET"},
]

#: Every username, display name and e-mail address of the fixtures: none may appear in any log.
PERSONAL_DATA: list[str] = [value for user in USERS for value in user.values()]

#: Authors of issues and comments (as the export format writes them), and the project owner.
AUTHORS = [{"username": u["username"], "email": u["email"]} for u in USERS[:4]]
OWNER = {"username": USERS[4]["username"], "email": USERS[4]["email"]}

PROJECT_ID = 4242

LABELS = ["bug", "feature", "docs", "security", "ux", "perf"]


def project() -> dict[str, Any]:
    return {
        "id": PROJECT_ID,
        "path": "acme/billing-api",
        "name": "Billing API",
        "description": "Invoices and payments",
        "owner": OWNER,
    }


def labels() -> list[dict[str, Any]]:
    colors = ["#d73a4a", "#a2eeef", "#0075ca", "#e4e669", "#7057ff", "#008672"]
    return [
        {"id": 10 + i, "name": name, "color": colors[i], "description": f"{name} things"}
        for i, name in enumerate(LABELS)
    ]


def issues(count: int) -> list[dict[str, Any]]:
    return [
        {
            "id": 1000 + n,
            "iid": n,
            "title": f"Issue number {n}",
            "description": f"Steps to reproduce {n}",
            "state": "closed" if n % 3 == 0 else "opened",
            "author": AUTHORS[n % len(AUTHORS)],
            "labels": [LABELS[n % len(LABELS)], LABELS[(n + 2) % len(LABELS)]],
            "created_at": f"2024-03-{1 + n % 28:02d}T10:00:00Z",
        }
        for n in range(1, count + 1)
    ]


def comments(issue_count: int, per_issue: int) -> list[dict[str, Any]]:
    out = []
    for n in range(1, issue_count + 1):
        for k in range(per_issue):
            out.append(
                {
                    "id": 50_000 + n * 10 + k,
                    "issue_id": 1000 + n,
                    "body": f"Comment {k} on issue {n}",
                    "author": AUTHORS[(n + k) % len(AUTHORS)],
                    "created_at": f"2024-04-{1 + k % 28:02d}T12:00:00Z",
                }
            )
    return out


def build(
    path: Path,
    *,
    issue_count: int = 12,
    per_issue: int = 2,
    extra_issues: list[Any] | None = None,
    extra_comments: list[Any] | None = None,
    extra_labels: list[Any] | None = None,
) -> Path:
    """A good export, plus optional extra (bad) records appended to each file."""
    return write_export(
        path,
        project(),
        labels=[*labels(), *(extra_labels or [])],
        issues=[*issues(issue_count), *(extra_issues or [])],
        comments=[*comments(issue_count, per_issue), *(extra_comments or [])],
    )

"""People in the import fixtures. Build fixture records from :data:`USERS`; the session log scan
(tests/log_scan.py) fails the test run if any string of :data:`PERSONAL_DATA` reaches a log line
(SPEC IMP-2: no usernames or e-mail addresses in logs, ever).

The values are deliberately distinctive so the scan has no false positives from ordinary words.
"""

from __future__ import annotations

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

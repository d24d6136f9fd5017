"""pytest plugin: a log scan over the whole test run (SPEC IMP-2, issue #8 "Must show").

While the session runs, every log record of the test process (Conveyor loggers from DEBUG, all
others from WARNING) is written, through Conveyor's own JSON formatter and scrubber, to
``<basetemp>/conveyor-session.log``. Child processes write their stderr to ``*.log`` files in
their test's ``tmp_path`` (the ``processes`` fixture: ``proc-<n>.log``). At the end of the session
every ``*.log`` file under the session's base temp directory is searched, case-insensitively,
for each string of ``tests/apps/imports/fixtures.py:PERSONAL_DATA``; a hit fails the run (exit
status 1) with the file, line number and the string found.

Enabled by ``pytest_plugins`` in tests/conftest.py, or ``-p log_scan`` with tests/ on the path.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conveyor.logs import make_formatter

SESSION_LOG = "conveyor-session.log"
_BASETEMP = pytest.StashKey[Path]()


@dataclass(frozen=True)
class Finding:
    path: Path
    line: int
    found: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.found!r}"


def personal_data() -> list[str]:
    """The fixture strings that must never be logged."""
    from apps.imports.fixtures import PERSONAL_DATA

    return list(PERSONAL_DATA)


def _forms(needle: str) -> set[str]:
    # As written, and as json.dumps with ensure_ascii would escape it (a child that logs JSON
    # its own way must not hide "Jürgen" as "J\u00fcrgen").
    return {needle.lower(), json.dumps(needle)[1:-1].lower()}


def scan(paths: Iterable[Path], needles: Iterable[str]) -> list[Finding]:
    """Every (file, line, needle) where a needle occurs, case-insensitively."""
    forms = [(needle, _forms(needle)) for needle in needles if needle]
    findings: list[Finding] = []
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue  # removed meanwhile: nothing left to leak
        lowered = text.lower()
        if not any(form in lowered for _, variants in forms for form in variants):
            continue
        for number, line in enumerate(lowered.splitlines(), start=1):
            for needle, variants in forms:
                if any(form in line for form in variants):
                    findings.append(Finding(path, number, needle))
    return findings


def log_files(basetemp: Path) -> list[Path]:
    """The session log and every child process log under the session's base temp directory."""
    return sorted(p for p in basetemp.rglob("*.log") if p.is_file())


@pytest.fixture(scope="session", autouse=True)
def _conveyor_session_log(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    basetemp = tmp_path_factory.getbasetemp()
    request.config.stash[_BASETEMP] = basetemp
    path = basetemp / SESSION_LOG
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(make_formatter("json"))
    handler.setLevel(logging.DEBUG)
    root, conveyor = logging.getLogger(), logging.getLogger("conveyor")
    previous = conveyor.level
    conveyor.setLevel(logging.DEBUG)  # scan what Conveyor would log at its most verbose
    root.addHandler(handler)
    try:
        yield path
    finally:
        root.removeHandler(handler)
        conveyor.setLevel(previous)
        handler.close()


@pytest.hookimpl(trylast=True)  # after session fixtures are torn down (their logs count)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    basetemp = session.config.stash.get(_BASETEMP, None)
    if basetemp is None:
        return  # no test ran
    files = log_files(basetemp)
    findings = scan(files, personal_data())
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if not findings:
        if reporter is not None and session.config.option.verbose > 0:
            reporter.write_line(f"log scan: {len(files)} log file(s), no fixture personal data")
        return
    lines = [
        f"log scan: fixture personal data found in {len(findings)} log line(s) "
        "(SPEC IMP-2: no usernames or e-mail addresses in logs):",
        *(f"  {finding}" for finding in findings[:50]),
    ]
    if reporter is not None:
        reporter.section("log scan", sep="=", red=True, bold=True)
        for line in lines:
            reporter.write_line(line)
    else:  # pragma: no cover - the terminal reporter is always there outside -p no:terminal
        print("\n".join(lines))
    session.exitstatus = pytest.ExitCode.TESTS_FAILED

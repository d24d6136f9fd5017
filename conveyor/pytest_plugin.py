"""pytest fixtures for applications using Conveyor (enabled automatically once installed).

``idempotent_worker`` runs a job's ``perform`` twice with the same arguments against the real
Redis, with nothing mocked, for your own assertions afterwards (SPEC DEDUP-2)::

    def test_refresh_is_idempotent(idempotent_worker, db):
        idempotent_worker(RefreshAuthorizations, user.id)
        assert db.count_authorizations(user.id) == 3
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from conveyor.core.job import Job
from conveyor.features.dedup import perform_twice


def pytest_configure(config: pytest.Config) -> None:
    """Run tests in Conveyor's test mode (unless ``CONVEYOR_ENV`` says otherwise): log contract
    violations such as an import log line without its ids raise (docs/logging.md). Set in the
    environment so worker processes the tests start inherit it."""
    os.environ.setdefault("CONVEYOR_ENV", "test")


@pytest.fixture
def idempotent_worker() -> Callable[..., None]:
    def run(job_class: type[Job], *args: Any) -> None:
        perform_twice(job_class, *args)

    return run

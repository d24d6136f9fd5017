"""What the data API's parts read through: one Redis (its admin operations) and one clock.

:class:`conveyor.api.Api` is the implementation; the parts (queues, sets, processes,
operations) depend on this Protocol rather than on the ``Api`` class, so the package has no
import cycle.
"""

from __future__ import annotations

from typing import Protocol

from conveyor.core.payload import Payload
from conveyor.redis.admin import Admin
from conveyor.redis.store import Store
from conveyor.settings import Settings


class Source(Protocol):
    """The Redis and clock a part of the data API reads."""

    @property
    def admin(self) -> Admin: ...

    @property
    def store(self) -> Store: ...

    @property
    def settings(self) -> Settings: ...

    def now(self) -> float: ...

    def notify_death(self, payload: Payload) -> None:
        """Run the app's death handlers for a job killed through the API."""
        ...

"""Every Redis key Conveyor touches, built in this one place.

The Sidekiq keys (``queue:*``, ``schedule``, ``retry``, ``dead``, ``processes``, ``stat:*`` and the
per-process hashes) keep Sidekiq's names so a Ruby Sidekiq can share the Redis. Keys only Conveyor
uses live under ``conveyor:`` so they can never collide with Sidekiq's.
"""

from __future__ import annotations


class Keys:
    """Key builder for one optional prefix (``"myapp"`` gives ``"myapp:queue:default"``)."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str = "") -> None:
        self.prefix = f"{prefix}:" if prefix and not prefix.endswith(":") else prefix

    def _k(self, key: str) -> str:
        return self.prefix + key

    # -- Sidekiq's keys -------------------------------------------------------------------------
    @property
    def queues(self) -> str:
        return self._k("queues")

    def queue(self, name: str) -> str:
        return self._k(f"queue:{name}")

    def queue_name(self, key: str) -> str:
        """Inverse of :meth:`queue`."""
        return key[len(self._k("queue:")) :]

    @property
    def schedule(self) -> str:
        return self._k("schedule")

    @property
    def retry(self) -> str:
        return self._k("retry")

    @property
    def dead(self) -> str:
        return self._k("dead")

    @property
    def processes(self) -> str:
        return self._k("processes")

    def process(self, identity: str) -> str:
        return self._k(identity)

    def work(self, identity: str) -> str:
        """What each thread runs (Sidekiq 7 name)."""
        return self._k(f"{identity}:work")

    def workers(self, identity: str) -> str:
        """What each thread runs (Sidekiq 6 name, read by Sidekiq 6.x's ``Workers`` API)."""
        return self._k(f"{identity}:workers")

    def signals(self, identity: str) -> str:
        return self._k(f"{identity}-signals")

    def stat(self, name: str) -> str:
        return self._k(f"stat:{name}")

    def stat_daily(self, name: str, day: str) -> str:
        return self._k(f"stat:{name}:{day}")

    # -- Conveyor's own keys --------------------------------------------------------------------
    @property
    def interrupted(self) -> str:
        return self._k("interrupted")

    def working(self, identity: str) -> str:
        """The reliable-fetch working list of one process."""
        return self._k(f"conveyor:working:{identity}")

    @property
    def working_registry(self) -> str:
        """Set of identities that may own a working list (so recovery never needs SCAN)."""
        return self._k("conveyor:working-registry")

    def liveness(self, identity: str) -> str:
        """Short-lived key a process refreshes with every heartbeat."""
        return self._k(f"conveyor:alive:{identity}")

    def lock(self, name: str) -> str:
        return self._k(f"conveyor:lock:{name}")

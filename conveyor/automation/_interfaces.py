"""What the parts of the workflow engine need from each other, as Protocols.

:class:`~conveyor.automation.engine.Automation` owns a
:class:`~conveyor.automation.master.Master` and a :class:`~conveyor.automation.node.NodeMonitor`;
they call back into the engine through :class:`EngineLike` (and the node reads the master
through :class:`MasterLike`), so neither module imports the engine: no import cycle, not even
one under ``TYPE_CHECKING``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from conveyor.automation.settings import AutomationSettings, Workflow
from conveyor.clock import Clock
from conveyor.redis.automation import AutomationStore

if TYPE_CHECKING:
    from conveyor.automation.lease import Term
    from conveyor.automation.runner import StepResult
    from conveyor.automation.runs import RunInfo


class LeadershipLike(Protocol):
    """What the master needs from :class:`conveyor.automation.lease.Leadership`."""

    def tick(self) -> Term | None: ...

    def current(self) -> Term | None: ...


#: Builds the leadership of one workflow (default: its ``leaderElection`` lease).
LeadershipFactory = Callable[[Workflow], LeadershipLike]


class MasterLike(Protocol):
    """What a node's heartbeat reads from its master loop."""

    stats: dict[str, int]

    def masters(self) -> dict[str, int]: ...

    def faults(self) -> dict[str, dict[str, Any]]: ...


class EngineLike(Protocol):
    """What the master loop and the node monitor need from the engine."""

    settings: AutomationSettings
    node: str
    clock: Clock
    term: float
    grace: float
    prepare_timeout: float

    @property
    def master(self) -> MasterLike: ...

    @property
    def store(self) -> AutomationStore: ...

    @property
    def work_dir(self) -> str: ...

    def enabled_workflows(self) -> list[Workflow]: ...

    def queue(self, workflow: str) -> str: ...

    def new_run_id(self) -> str: ...

    def run_status(self, run_id: str) -> RunInfo | None: ...

    def task_payload(
        self, workflow: str, run_id: str, index: int, fence: int, variables: Mapping[str, Any]
    ) -> str: ...

    def record_step(self, workflow: str, step: str, result: StepResult) -> None: ...

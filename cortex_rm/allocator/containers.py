"""Containers as the RM knows them: YARN's ``RMContainer`` and its lifecycle.

A container is born in an allocation pass (NEW -> ALLOCATED), is handed out once
(ALLOCATED -> ACQUIRED: in an allocate response to its ApplicationMaster, or to the
AM launcher when it is the AM's own container), starts when its node reports it
(-> RUNNING) and ends in one of four final states, as YARN's ``RMContainerState``.
A restarted RM recovers a container its node still runs straight into RUNNING
(NEW -> RUNNING on RECOVER, as YARN's ``RMContainerRecoverEvent``).  The final states:

* COMPLETED: the node reported that it exited (any exit status);
* RELEASED: the ApplicationMaster gave it back;
* KILLED: the RM ended it (its node was lost, its attempt ended);
* EXPIRED: it was handed out but never started within the expiry.

Once final, every further report about it is declared ignorable (a node keeps
reporting a released container as RUNNING until it has killed it), so a container
completes exactly once.  The exit status an ApplicationMaster sees is one of
``ContainerExitStatus`` or the process's own exit code (e.g. 143 after SIGTERM).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from cortex_rm.allocator.errors import AllocatorError
from cortex_rm.allocator.nodes import NodeState
from cortex_rm.yarn.container_status import ContainerExitStatus
from cortex_rm.yarn.ids import ApplicationAttemptId, ContainerId, NodeId
from cortex_rm.yarn.resources import Resource
from cortex_rm.yarn.transitions import TransitionTable

# Diagnostics YARN gives these completions (SchedulerUtils), so logs read the same.
RELEASED_CONTAINER: Final = "Container released by application"
LOST_CONTAINER: Final = "Container released on a *lost* node"
COMPLETED_APPLICATION: Final = "Container of a completed application"
EXPIRED_CONTAINER: Final = "Container expired since it was unused"
DECOMMISSIONED_CONTAINER: Final = "Container killed: its node was decommissioned"


def gone_status(node_state: NodeState) -> tuple[int, str]:
    """The exit status and diagnostics of a container still on a node that left the scheduler:
    a DECOMMISSIONED node's end KILLED_BY_RESOURCEMANAGER, any other's (LOST) ABORTED; Spark
    counts neither against the application (YarnAllocator's NOT_APP_AND_SYSTEM_FAULT_EXIT_STATUS)."""
    if node_state is NodeState.DECOMMISSIONED:
        return ContainerExitStatus.KILLED_BY_RESOURCEMANAGER, DECOMMISSIONED_CONTAINER
    return ContainerExitStatus.ABORTED, LOST_CONTAINER


class InvalidContainerRelease(AllocatorError):
    """An ApplicationMaster tried to release a container that belongs to another attempt."""


class Locality(enum.Enum):
    """How close to what was asked a container landed (YARN's ``NodeType``)."""

    NODE_LOCAL = "NODE_LOCAL"
    RACK_LOCAL = "RACK_LOCAL"
    OFF_SWITCH = "OFF_SWITCH"


class RMContainerState(enum.Enum):
    NEW = "NEW"
    ALLOCATED = "ALLOCATED"
    ACQUIRED = "ACQUIRED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    RELEASED = "RELEASED"
    KILLED = "KILLED"
    EXPIRED = "EXPIRED"

    @property
    def is_final(self) -> bool:
        return self in FINAL_CONTAINER_STATES


FINAL_CONTAINER_STATES: frozenset[RMContainerState] = frozenset(
    {RMContainerState.COMPLETED, RMContainerState.RELEASED, RMContainerState.KILLED, RMContainerState.EXPIRED}
)
LIVE_CONTAINER_STATES: frozenset[RMContainerState] = frozenset({RMContainerState.ALLOCATED, RMContainerState.ACQUIRED, RMContainerState.RUNNING})


class RMContainerEvent(enum.Enum):
    START = "START"  # the scheduler placed it on a node
    ACQUIRED = "ACQUIRED"  # handed to the AM (allocate response) or to the AM launcher
    LAUNCHED = "LAUNCHED"  # its node reports it RUNNING
    FINISHED = "FINISHED"  # its node reports that it exited
    RELEASED = "RELEASED"  # the AM gave it back
    KILL = "KILL"  # the RM ends it: node lost, attempt ended
    EXPIRE = "EXPIRE"  # handed out but never launched in time
    RECOVER = "RECOVER"  # a restarted RM learns it from its node's registration


_S, _E = RMContainerState, RMContainerEvent

CONTAINER_TRANSITIONS: TransitionTable[RMContainerState, RMContainerEvent] = TransitionTable(
    "container",
    {
        (_S.NEW, _E.START): _S.ALLOCATED,
        (_S.ALLOCATED, _E.ACQUIRED): _S.ACQUIRED,
        (_S.NEW, _E.RECOVER): _S.RUNNING,
        (_S.ACQUIRED, _E.LAUNCHED): _S.RUNNING,
        **{(s, _E.FINISHED): _S.COMPLETED for s in LIVE_CONTAINER_STATES},
        **{(s, _E.RELEASED): _S.RELEASED for s in LIVE_CONTAINER_STATES},
        **{(s, _E.KILL): _S.KILLED for s in LIVE_CONTAINER_STATES},
        (_S.ALLOCATED, _E.EXPIRE): _S.EXPIRED,
        (_S.ACQUIRED, _E.EXPIRE): _S.EXPIRED,
    },
    ignored=[
        # a node reports RUNNING on every heartbeat
        (_S.RUNNING, _E.LAUNCHED),
        # nobody can start a container that was never handed out: a confused or lying node
        (_S.ALLOCATED, _E.LAUNCHED),
        # late news about a container that has already ended: it completes only once
        *(
            (s, e)
            for s in FINAL_CONTAINER_STATES
            for e in (_E.LAUNCHED, _E.FINISHED, _E.RELEASED, _E.KILL, _E.EXPIRE)
        ),
    ],
)


@dataclass(eq=False)
class RMContainer:
    """One container: where it runs, what it has, what it was asked for, and how it ended.

    ``priority`` and ``allocation_request_id`` echo the ask it satisfies (Spark matches
    an allocated container to its request by priority); ``requested`` is the ask's
    capability, ``resource`` what the container really has (the ask normalized up to
    the scheduler's minimum allocation).  ``exit_status`` is
    ``ContainerExitStatus.INVALID`` until the container is final.
    """

    container_id: ContainerId
    node_id: NodeId
    resource: Resource
    priority: int
    allocation_request_id: int = 0
    is_am: bool = False
    requested: Resource | None = None
    locality: Locality = Locality.OFF_SWITCH
    state: RMContainerState = RMContainerState.NEW
    acquired: bool = False  # ever handed out (to its AM, or to the AM launcher)
    exit_status: int = ContainerExitStatus.INVALID
    diagnostics: str = ""
    creation_time_ms: int = 0
    acquired_time_ms: int = 0
    launch_time_ms: int = 0
    finish_time_ms: int = 0

    @property
    def attempt_id(self) -> ApplicationAttemptId:
        return self.container_id.attempt_id

    @property
    def is_live(self) -> bool:
        return self.state in LIVE_CONTAINER_STATES

    def handle(self, event: RMContainerEvent, now_ms: int) -> bool:
        """Apply ``event``; True when the state changed, False when it was ignorable.

        Raises ``IllegalTransition`` for anything the table does not allow.
        """
        new = CONTAINER_TRANSITIONS.next_state(self.state, event)
        if new is None:
            return False
        self.state = new
        if new is RMContainerState.ALLOCATED:
            self.creation_time_ms = now_ms
        elif new is RMContainerState.ACQUIRED:
            self.acquired = True
            self.acquired_time_ms = now_ms
        elif new is RMContainerState.RUNNING:
            self.launch_time_ms = now_ms
            self.acquired = True  # (a recovered one was handed out by an earlier RM)
        return True

    def finish(self, event: RMContainerEvent, exit_status: int, diagnostics: str, now_ms: int) -> bool:
        """End the container with ``event``; True if this call ended it (False: it had ended already)."""
        if not self.handle(event, now_ms):
            return False
        if not self.state.is_final:  # pragma: no cover - the table only allows final targets here
            raise AssertionError(f"{event.name} left container {self.container_id} in {self.state.name}")
        self.exit_status = exit_status
        self.diagnostics = diagnostics
        self.finish_time_ms = now_ms
        return True

    def __repr__(self) -> str:
        return (
            f"RMContainer({self.container_id} on {self.node_id}, {self.resource}, priority {self.priority}, "
            f"{self.state.name}{', AM' if self.is_am else ''})"
        )

"""A container as the NodeManager knows it: YARN's NM ``ContainerImpl`` lifecycle.

::

    NEW --INIT--> LOCALIZING --RESOURCES_LOCALIZED--> LOCALIZED --LAUNCHED--> RUNNING
                  LOCALIZING --LOCALIZATION_FAILED--> LOCALIZATION_FAILED --CLEANED_UP--> DONE
                                                      LOCALIZED --LAUNCH_FAILED--> EXITED_WITH_FAILURE
    RUNNING --EXITED--> EXITED_WITH_SUCCESS | EXITED_WITH_FAILURE --CLEANED_UP--> DONE
    LOCALIZING | LOCALIZED | RUNNING --KILL--> KILLING --KILLED--> DONE
    NEW --RECOVERED--> RUNNING | EXITED_WITH_SUCCESS | EXITED_WITH_FAILURE    (NodeManager recovery)

KILLING waits for whatever was in progress to end (a localization that cannot be
interrupted, a launch, the process after its signal) before DONE; a launch that
completes while KILLING stays KILLING (the process is signalled at once).  A KILL
of a container that has already exited, or is being killed, changes nothing.

On the wire (``ContainerStatusProto.state``, and the heartbeat's ContainerState)
NEW is ``C_NEW``, DONE is ``C_COMPLETE`` and every other state ``C_RUNNING``, as
YARN's NodeManager reports: a container is complete only once it is cleaned up.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from twisted.internet import defer

from cortex_rm.container.launch import ContainerPaths
from cortex_rm.container.local_resources import LocalResource
from cortex_rm.yarn.container_status import ContainerExitStatus, ContainerState
from cortex_rm.yarn.ids import ContainerId
from cortex_rm.yarn.resource_tracker import ContainerReport
from cortex_rm.yarn.resources import Resource
from cortex_rm.yarn.transitions import TransitionTable

if TYPE_CHECKING:
    from cortex_rm.container.runtime import RunningContainer


class NMContainerState(enum.Enum):
    """YARN's NM ``ContainerState`` (the subset a Cortex node goes through)."""

    NEW = "NEW"
    LOCALIZING = "LOCALIZING"
    LOCALIZATION_FAILED = "LOCALIZATION_FAILED"
    LOCALIZED = "LOCALIZED"
    RUNNING = "RUNNING"
    EXITED_WITH_SUCCESS = "EXITED_WITH_SUCCESS"
    EXITED_WITH_FAILURE = "EXITED_WITH_FAILURE"
    KILLING = "KILLING"
    DONE = "DONE"


class NMContainerEvent(enum.Enum):
    INIT = "INIT"
    RESOURCES_LOCALIZED = "RESOURCES_LOCALIZED"
    LOCALIZATION_FAILED = "LOCALIZATION_FAILED"
    LAUNCHED = "LAUNCHED"
    LAUNCH_FAILED = "LAUNCH_FAILED"
    EXITED = "EXITED"
    KILL = "KILL"
    KILLED = "KILLED"  # what was in progress when the kill came has ended
    CLEANED_UP = "CLEANED_UP"
    RECOVERED = "RECOVERED"  # found again at a restart (NodeManager recovery): running, or ended


_S, _E = NMContainerState, NMContainerEvent
#: States in which the container's work is over (exit status known) or being wound up.
FINISHED_STATES = frozenset({_S.LOCALIZATION_FAILED, _S.EXITED_WITH_SUCCESS, _S.EXITED_WITH_FAILURE, _S.DONE})

NM_CONTAINER_TRANSITIONS: TransitionTable[NMContainerState, NMContainerEvent] = TransitionTable(
    "NodeManager container",
    {
        (_S.NEW, _E.INIT): _S.LOCALIZING,
        (_S.NEW, _E.KILL): _S.DONE,
        (_S.NEW, _E.RECOVERED): [_S.RUNNING, _S.EXITED_WITH_SUCCESS, _S.EXITED_WITH_FAILURE],
        (_S.LOCALIZING, _E.RESOURCES_LOCALIZED): _S.LOCALIZED,
        (_S.LOCALIZING, _E.LOCALIZATION_FAILED): _S.LOCALIZATION_FAILED,
        (_S.LOCALIZING, _E.KILL): _S.KILLING,
        (_S.LOCALIZED, _E.LAUNCHED): _S.RUNNING,
        (_S.LOCALIZED, _E.LAUNCH_FAILED): _S.EXITED_WITH_FAILURE,
        (_S.LOCALIZED, _E.KILL): _S.KILLING,
        (_S.RUNNING, _E.EXITED): [_S.EXITED_WITH_SUCCESS, _S.EXITED_WITH_FAILURE],
        (_S.RUNNING, _E.KILL): _S.KILLING,
        (_S.KILLING, _E.LAUNCHED): _S.KILLING,
        (_S.KILLING, _E.KILLED): _S.DONE,
        (_S.LOCALIZATION_FAILED, _E.CLEANED_UP): _S.DONE,
        (_S.EXITED_WITH_SUCCESS, _E.CLEANED_UP): _S.DONE,
        (_S.EXITED_WITH_FAILURE, _E.CLEANED_UP): _S.DONE,
    },
    ignored=[(s, _E.KILL) for s in (_S.KILLING, *FINISHED_STATES)],
)

_WIRE_STATE = {_S.NEW: ContainerState.NEW, _S.DONE: ContainerState.COMPLETE}
#: yarn.nodemanager.container-diagnostics-maximum-size: the latest diagnostics are kept.
MAX_DIAGNOSTICS_CHARS = 10_000


@dataclass(eq=False)
class NMContainer:
    """One container on this node: what it was started with and where it is in its lifecycle."""

    container_id: ContainerId
    user: str
    resource: Resource
    paths: ContainerPaths
    resources: list[LocalResource]
    #: The priority of the ask it satisfies and when the RM allocated it (its ContainerToken's),
    #: reported when the node registers so a restarted RM can count it in (YARN's NMContainerStatus).
    priority: int = 0
    creation_time_ms: int = 0
    state: NMContainerState = NMContainerState.NEW
    exit_status: int = ContainerExitStatus.INVALID
    diagnostics: list[str] = field(default_factory=list)
    #: The exit status a kill reports (KILLED_BY_APPMASTER ...); None: the process's own code.
    kill_status: int | None = None
    running: RunningContainer | None = None
    #: The runtime's ``started`` failed: the process never ran.
    start_failed: bool = False
    #: Host dirs of this application the container shares (its staging dir).
    staging_dirs: tuple[Path, ...] = ()
    #: The runtime image root it was started in (kept while it runs: not pruned under it).
    root_image: Path | None = None
    #: When the RM acknowledged the container's completion (ms), None before.
    acknowledged_ms: int | None = None
    #: Fired once with None when the container reaches DONE.
    done: defer.Deferred[None] = field(default_factory=defer.Deferred)

    @property
    def app_id(self) -> str:
        return str(self.container_id.attempt_id.app_id)

    @property
    def wire_state(self) -> ContainerState:
        return _WIRE_STATE.get(self.state, ContainerState.RUNNING)

    def report(self) -> ContainerReport:
        """The container's status as a heartbeat (and getContainerStatuses) carries it."""
        return ContainerReport(
            container_id=self.container_id,
            state=self.wire_state,
            exit_status=self.exit_status,
            diagnostics="\n".join(self.diagnostics)[-MAX_DIAGNOSTICS_CHARS:],
            resource=self.resource,
            priority=self.priority,
            creation_time_ms=self.creation_time_ms,
        )

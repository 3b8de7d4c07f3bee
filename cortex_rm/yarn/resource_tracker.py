"""The NodeTracker conversation as plain values: what a node reports, what the RM answers.

These are the messages of ``cortex.thrift``'s ``NodeTracker`` service in our own
types (``NodeId``, ``Resource``, ``ContainerId``), so that the two sans-IO cores
(the RM's ``allocator.node_tracker.NodeTracker`` and the node's
``container.status_updater.NodeStatusUpdater``) never see Thrift.
``internal.tracker_codec`` converts them to and from the generated structs and
validates what arrives.  The names follow YARN's ResourceTracker protocol.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from cortex_rm.yarn.container_status import ContainerExitStatus, ContainerState
from cortex_rm.yarn.errors import YarnError
from cortex_rm.yarn.ids import ApplicationId, ContainerId, NodeId
from cortex_rm.yarn.resources import Resource
from cortex_rm.yarn.tokens import MasterKey

# YARN's ResourceTracker: response ids count up and wrap (NodeHeartbeatResponse.responseId is an int32).
MAX_RESPONSE_ID = 2**31 - 1
# Container statuses in one heartbeat, or ids to clean up in one answer: the codec refuses more,
# and a node with more reports the rest in later heartbeats.
MAX_CONTAINERS = 4096


class NodeRefused(YarnError):
    """The RM refuses this node's request (another key owns the NodeId, or the request is invalid).

    Raised by the RM's core, carried on the wire as the IDL's ``NodeRefused``, and
    raised again on the node's side.
    """


def next_response_id(response_id: int) -> int:
    """The response id after ``response_id`` (YARN's ResourceTrackerService.getNextResponseId)."""
    return 0 if response_id >= MAX_RESPONSE_ID else response_id + 1


class NodeAction(enum.Enum):
    """What the RM wants the node to do next (YARN's NodeAction)."""

    NORMAL = "NORMAL"
    RESYNC = "RESYNC"  # register again
    SHUTDOWN = "SHUTDOWN"  # stop reporting


class NodeLeave(enum.Enum):
    """How far a node that leaves gracefully has got (YARN's graceful decommission, driven by the node)."""

    DECOMMISSIONING = "DECOMMISSIONING"  # no new containers; the running ones have their grace
    DRAINED = "DRAINED"  # no container left: the RM may mark it DECOMMISSIONED


@dataclass(frozen=True)
class NodeRegistration:
    """A node introduces itself (YARN's RegisterNodeManagerRequest)."""

    node_id: NodeId
    http_address: str
    rack: str
    capability: Resource
    heartbeat_interval_ms: int  # what the node asks for; the RM may shorten it
    version: str = ""
    # as YARN's nodeStatus in the registration: an unhealthy node takes no containers from the start
    healthy: bool = True
    health_report: str = ""
    # YARN's NMContainerStatuses: what the node runs and recently finished, so that an RM that
    # restarted (or took over) recovers the running containers instead of losing them
    containers: tuple[ContainerReport, ...] = ()
    # a node registering (again) in the middle of a graceful leave: DECOMMISSIONING from the start
    leave: NodeLeave | None = None


@dataclass(frozen=True)
class RegistrationAnswer:
    """The RM accepted a registration (YARN's RegisterNodeManagerResponse)."""

    heartbeat_interval_ms: int
    rm_identifier: int  # the RM's start time in ms: a new value means the RM restarted
    diagnostics: str = ""
    # The key the RM signs ContainerTokens with (YARN's containerTokenMasterKey); the
    # node checks startContainers' tokens with it.  None when the RM hands out none.
    container_token_master_key: MasterKey | None = field(default=None, repr=False)
    # This RM names the completed containers the node may forget (``HeartbeatAnswer.containers_to_remove``):
    # the node keeps acknowledged completions until then.  False (an older RM): forgotten once acknowledged.
    removes_completed_containers: bool = False


@dataclass(frozen=True)
class ContainerReport:
    """One container's status in a heartbeat (YARN's ContainerStatus), and in a registration
    (YARN's NMContainerStatus: with what it was allocated, so a restarted RM can count it in)."""

    container_id: ContainerId
    state: ContainerState
    exit_status: int = ContainerExitStatus.INVALID
    diagnostics: str = ""
    resource: Resource | None = None  # None: not said (an older node)
    priority: int = 0  # the priority of the ask it satisfied
    creation_time_ms: int = 0  # when the RM allocated it (0: not said)


@dataclass(frozen=True)
class NodeHealth:
    """What a node knows about itself at heartbeat time."""

    healthy: bool = True
    health_report: str = ""
    containers: tuple[ContainerReport, ...] = ()
    #: Within its schedule (``[nodemanager] schedule``): False, it takes no new containers now.
    offering: bool = True
    leave: NodeLeave | None = None  # None: the node is not leaving


@dataclass(frozen=True)
class NodeStatusReport:
    """A heartbeat (YARN's NodeHeartbeatRequest with its NodeStatus)."""

    node_id: NodeId
    response_id: int  # the response id of the last answer the node received
    healthy: bool = True
    health_report: str = ""
    containers: tuple[ContainerReport, ...] = ()
    #: The node's total resource now (its caps change without a restart); None: as registered.
    capability: Resource | None = None
    #: False outside the node's schedule: the RM places nothing new there (its containers go on).
    offering: bool = True
    leave: NodeLeave | None = None  # None: the node is not leaving


@dataclass(frozen=True)
class HeartbeatAnswer:
    """The RM's answer to a heartbeat (YARN's NodeHeartbeatResponse)."""

    response_id: int
    action: NodeAction
    next_heartbeat_interval_ms: int
    containers_to_cleanup: tuple[ContainerId, ...] = ()
    diagnostics: str = ""
    # finished applications whose containers and work dirs the node should clean up
    applications_to_cleanup: tuple[ApplicationId, ...] = ()
    # completed containers the node may forget (YARN's containersToBeRemovedFromNM): their AM has them
    containers_to_remove: tuple[ContainerId, ...] = ()
    # with SHUTDOWN: the RM marked this draining node DECOMMISSIONED, so it may go
    decommissioned: bool = False

"""The RM's view of the cluster's NodeManagers.

A node appears when it registers (with its capacity), stays RUNNING while it
reports, and becomes LOST when its reports stop past the expiry (issue 3 wires the
reports; the ring will later drive membership).  Lifecycle names follow YARN's
``NodeState``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from cortex_rm.allocator.errors import UnknownNode
from cortex_rm.yarn.ids import NodeId
from cortex_rm.yarn.resources import ZERO, Resource
from cortex_rm.yarn.transitions import TransitionTable


class NodeState(enum.Enum):
    NEW = "NEW"
    RUNNING = "RUNNING"
    UNHEALTHY = "UNHEALTHY"
    DECOMMISSIONED = "DECOMMISSIONED"
    LOST = "LOST"
    REBOOTED = "REBOOTED"
    DECOMMISSIONING = "DECOMMISSIONING"
    SHUTDOWN = "SHUTDOWN"


class NodeEvent(enum.Enum):
    STARTED = "STARTED"  # registration accepted
    HEALTHY = "HEALTHY"
    UNHEALTHY = "UNHEALTHY"
    EXPIRE = "EXPIRE"  # no report within the expiry
    RECONNECTED = "RECONNECTED"  # a lost or shut down node registers again
    SHUTDOWN = "SHUTDOWN"  # the node said goodbye
    DECOMMISSION = "DECOMMISSION"  # the node leaves gracefully: no new containers, the running ones finish
    DECOMMISSIONED = "DECOMMISSIONED"  # the leaving node has nothing left here


_N, _V = NodeState, NodeEvent
NODE_TRANSITIONS: TransitionTable[NodeState, NodeEvent] = TransitionTable(
    "node",
    {
        (_N.NEW, _V.STARTED): _N.RUNNING,
        (_N.RUNNING, _V.UNHEALTHY): _N.UNHEALTHY,
        (_N.UNHEALTHY, _V.HEALTHY): _N.RUNNING,
        (_N.RUNNING, _V.EXPIRE): _N.LOST,
        (_N.UNHEALTHY, _V.EXPIRE): _N.LOST,
        (_N.RUNNING, _V.SHUTDOWN): _N.SHUTDOWN,
        (_N.UNHEALTHY, _V.SHUTDOWN): _N.SHUTDOWN,
        (_N.LOST, _V.RECONNECTED): _N.RUNNING,
        (_N.SHUTDOWN, _V.RECONNECTED): _N.RUNNING,
        (_N.RUNNING, _V.RECONNECTED): _N.RUNNING,
        (_N.UNHEALTHY, _V.RECONNECTED): _N.RUNNING,
        # graceful decommission (YARN's RMNodeImpl): a DECOMMISSIONING node keeps its containers
        # but takes no new ones; a silent one is LOST as any other; one that registers again
        # (it restarted, or the RM did) is RUNNING until its heartbeat says it is leaving
        (_N.RUNNING, _V.DECOMMISSION): _N.DECOMMISSIONING,
        (_N.UNHEALTHY, _V.DECOMMISSION): _N.DECOMMISSIONING,
        (_N.DECOMMISSIONING, _V.DECOMMISSIONED): _N.DECOMMISSIONED,
        (_N.DECOMMISSIONING, _V.EXPIRE): _N.LOST,
        (_N.DECOMMISSIONING, _V.RECONNECTED): _N.RUNNING,
        (_N.DECOMMISSIONED, _V.RECONNECTED): _N.RUNNING,
    },
    ignored=[
        (_N.RUNNING, _V.HEALTHY),
        (_N.UNHEALTHY, _V.UNHEALTHY),
        (_N.LOST, _V.EXPIRE),
        (_N.DECOMMISSIONING, _V.HEALTHY),  # its health no longer matters: it only drains
        (_N.DECOMMISSIONING, _V.UNHEALTHY),
        (_N.DECOMMISSIONING, _V.DECOMMISSION),
    ],
)

ACTIVE_NODE_STATES = frozenset({NodeState.RUNNING, NodeState.UNHEALTHY, NodeState.DECOMMISSIONING})
#: The states whose nodes count in the cluster's resources (an UNHEALTHY node left the scheduler;
#: a DECOMMISSIONING one is still in it with its containers, but takes no new ones: see
#: ``NodeDirectory.drain``).
SCHEDULABLE_NODE_STATES = frozenset({NodeState.RUNNING, NodeState.DECOMMISSIONING})


@dataclass
class NodeRecord:
    """One NodeManager as the RM knows it."""

    node_id: NodeId
    http_address: str
    rack: str
    capability: Resource
    state: NodeState = NodeState.NEW
    used: Resource = ZERO
    num_containers: int = 0
    health_report: str = ""
    last_health_update_ms: int = 0
    labels: frozenset[str] = field(default_factory=frozenset)  # its class: {"static"} or {"volatile"}
    ring_id: int | None = None  # the ring member whose key registered it (None: not a ring member)
    offering: bool = True  # False outside its contributor's schedule: placed nothing new (roles/node_caps.py)

    @property
    def available(self) -> Resource:
        return self.capability - self.used


class NodeTable:
    """Every node that ever registered, by NodeId."""

    def __init__(self) -> None:
        self._nodes: dict[NodeId, NodeRecord] = {}

    def __iter__(self) -> Iterator[NodeRecord]:
        return iter(self._nodes.values())

    def __len__(self) -> int:
        return len(self._nodes)

    def get(self, node_id: NodeId) -> NodeRecord:
        try:
            return self._nodes[node_id]
        except KeyError:
            raise UnknownNode(f"node {node_id} has not registered with this ResourceManager") from None

    def register(
        self,
        node_id: NodeId,
        http_address: str,
        capability: Resource,
        now_ms: int,
        rack: str = "/default-rack",
        ring_id: int | None = None,
    ) -> NodeRecord:
        """A node (re)registers: RUNNING with fresh capacity and no containers."""
        node = self._nodes.get(node_id)
        if node is None:
            node = NodeRecord(node_id, http_address, rack, capability, ring_id=ring_id)
            self._nodes[node_id] = node
            event = NodeEvent.STARTED
        else:
            node.http_address, node.rack, node.capability = http_address, rack, capability
            node.ring_id = ring_id
            node.used, node.num_containers, node.offering = ZERO, 0, True
            event = NodeEvent.RECONNECTED
        self._apply(node, event)
        node.last_health_update_ms = now_ms
        return node

    def report(self, node_id: NodeId, now_ms: int, healthy: bool = True, health_report: str = "") -> NodeRecord:
        """A heartbeat with the node's health."""
        node = self.get(node_id)
        self._apply(node, NodeEvent.HEALTHY if healthy else NodeEvent.UNHEALTHY)
        node.health_report = health_report
        node.last_health_update_ms = now_ms
        return node

    def expire(self, node_id: NodeId) -> NodeRecord:
        """The node stopped reporting: LOST."""
        node = self.get(node_id)
        self._apply(node, NodeEvent.EXPIRE)
        return node

    def leave(self, node_id: NodeId, event: NodeEvent) -> NodeRecord:
        """A graceful leave's step (``DECOMMISSION`` or ``DECOMMISSIONED``)."""
        node = self.get(node_id)
        self._apply(node, event)
        return node

    def _apply(self, node: NodeRecord, event: NodeEvent) -> None:
        new = NODE_TRANSITIONS.next_state(node.state, event)
        if new is not None:
            node.state = new

    def with_states(self, states: Iterable[NodeState] | None) -> list[NodeRecord]:
        """Nodes in any of ``states``; with none given, every node (YARN's getClusterNodes: all states)."""
        wanted = frozenset(states) if states else frozenset(NodeState)
        return [n for n in self._nodes.values() if n.state in wanted]

    def count(self, state: NodeState) -> int:
        return sum(1 for n in self._nodes.values() if n.state is state)

    def total_capability(self) -> Resource:
        """The cluster's resources, as YARN's scheduler counts them: the nodes it uses (not the
        UNHEALTHY ones, which left it, nor the LOST)."""
        return sum((n.capability for n in self.with_states(SCHEDULABLE_NODE_STATES)), ZERO)

    def total_used(self) -> Resource:
        """What is allocated on the nodes the scheduler uses."""
        return sum((n.used for n in self.with_states(SCHEDULABLE_NODE_STATES)), ZERO)

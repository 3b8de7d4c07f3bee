"""The RM's decisions about reporting nodes: YARN's ResourceTrackerService and NMLivelinessMonitor.

``NodeTracker`` is a sans-IO core over the ``NodeTable`` and a clock.  The wire
(``cortex_rm/internal/tracker_server.py``) decodes each call, hands it here with
the fingerprint of the key the caller showed in TLS, and encodes the answer.

Registration
    A node registers with its NodeId, capacity and the heartbeat interval it
    would like; the RM answers with the interval it must use: the wish, clamped
    to ``[MIN_HEARTBEAT_INTERVAL_MS, nm_expiry_ms / 3]`` so that at least three
    heartbeats fit in the expiry window.  The node becomes RUNNING (NEW ->
    RUNNING, or LOST/SHUTDOWN/RUNNING -> RUNNING on a re-registration), and its
    NodeId is bound to the caller's fingerprint: a registration or heartbeat for
    that NodeId from another key is refused (``NodeRefused``).  See
    ``cortex_rm/internal/identity.py`` for why this binding, and its limits.
    The answer carries the container-token master key the tracker was given
    (the key the RM signs ContainerTokens with), so the node can check the
    tokens AMs present to it; the key travels only over the mutual-TLS channel.
    The containers the node lists in its registration (YARN's NMContainerStatuses)
    go to the listener's ``containers_reported`` right after ``node_registered``
    (always, an empty list too), so an RM that restarted recovers them.
    With ``removes_completed_containers`` the answer says that this RM names the
    completed containers a node may forget (``containers_to_remove``, from the
    listener's ``cleanup_for``): the node keeps them until then and lists them when it
    registers again, so a completion acknowledged by an RM that died before the AM
    pulled it still reaches the AM through the next one.

Heartbeats (YARN's response-id protocol)
    Each answer carries a response id one above the previous; the node sends back
    the id of the last answer it received.  With ``last`` the id of the RM's last
    answer to this node:

    * ``sent == last``: a fresh heartbeat; the health is recorded, container
      statuses go to the listener, and a new answer ``last + 1`` is returned;
    * ``sent + 1 == last``: the node did not receive our last answer (the
      connection broke); the same answer is returned again, with the same
      containers and applications to clean up and completed containers to forget
      (taken from the listener once, for the fresh heartbeat);
    * anything else: the node is out of step, RESYNC: it must register again.

    A heartbeat from a node that is not registered (unknown: the RM restarted; or
    no longer active: it was declared LOST) is answered RESYNC too, so the node
    re-registers and rejoins as RUNNING.

Expiry
    Every heartbeat and registration, duplicates included, counts as a sign of
    life.  ``expire_silent_nodes(now_ms)`` marks LOST every active node silent
    for *more than* ``nm_expiry_ms`` (YARN's AbstractLivelinessMonitor compares
    ``now > last + expiry``) and returns them; the Twisted adapter calls it every
    ``expiry_check_interval_ms`` (expiry / 3, as YARN).  The listener's
    ``node_lost`` is where the scheduler completes the node's containers with
    ``ContainerExitStatus.ABORTED``.

Graceful leave
    A fresh heartbeat's ``leave`` (DECOMMISSIONING, then DRAINED) goes to
    ``NodeLeaves`` (``node_leave.py``); the answer to the heartbeat that makes the
    node DECOMMISSIONED is SHUTDOWN with ``decommissioned``, and a duplicate of that
    heartbeat (its answer was lost) gets the same answer, not RESYNC.  A node that
    registers during its leave (after a failover or a RESYNC) says so in the
    registration: it is DECOMMISSIONING from the start, never schedulable.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from cortex_rm.allocator.errors import UnknownNode
from cortex_rm.allocator.node_cleanup import NodeOrders
from cortex_rm.allocator.node_leave import DEFAULT_MAX_WAIT_MS, NodeLeaveListener, NodeLeaves
from cortex_rm.allocator.nodes import (
    ACTIVE_NODE_STATES,
    NODE_TRANSITIONS,
    NodeEvent,
    NodeRecord,
    NodeState,
    NodeTable,
)
from cortex_rm.yarn.ids import NodeId
from cortex_rm.yarn.resource_tracker import (
    ContainerReport,
    HeartbeatAnswer,
    NodeAction,
    NodeLeave,
    NodeRefused,
    NodeRegistration,
    NodeStatusReport,
    RegistrationAnswer,
    next_response_id,
)
from cortex_rm.yarn.tokens import MasterKey

log = Logger()

MIN_HEARTBEAT_INTERVAL_MS = 50


class NodeTrackerListener(Protocol):
    """What the scheduler learns from node reports, and what it asks of nodes in return."""

    def node_registered(self, node: NodeRecord) -> None:
        """``node`` (re)registered: it is RUNNING with fresh capacity and no containers."""

    def containers_reported(self, node: NodeRecord, containers: tuple[ContainerReport, ...]) -> None:
        """A fresh heartbeat from ``node`` listed these container statuses; or, right after
        ``node_registered``, the registration did (YARN's NMContainerStatuses: a restarted RM
        recovers the running ones)."""

    def node_lost(self, node: NodeRecord) -> None:
        """``node`` just became LOST: its containers are gone (exit status ``ContainerExitStatus.ABORTED``, which Spark does not count as a failure)."""

    def node_health_changed(self, node: NodeRecord) -> None:
        """``node`` went RUNNING -> UNHEALTHY (it takes no containers; those it had end) or back."""

    def node_resized(self, node: NodeRecord) -> None:
        """``node``'s capability or its offering changed (its caps, re-read without a restart, or its
        schedule): its containers stay."""

    def cleanup_for(self, node: NodeRecord) -> NodeOrders:
        """Containers to kill, finished applications to clean up and completed containers the node may
        forget, for ``node``'s next answer."""


class IgnoringListener:
    """The listener when no scheduler is attached: node events change nothing else."""

    def node_registered(self, node: NodeRecord) -> None:
        pass

    def containers_reported(self, node: NodeRecord, containers: tuple[ContainerReport, ...]) -> None:
        pass

    def node_lost(self, node: NodeRecord) -> None:
        pass

    def node_health_changed(self, node: NodeRecord) -> None:
        pass

    def node_resized(self, node: NodeRecord) -> None:
        pass

    def cleanup_for(self, node: NodeRecord) -> NodeOrders:
        return NodeOrders()


@dataclass
class _Liveness:
    """What the tracker keeps per node besides the NodeTable's record."""

    fingerprint: str
    last_seen_ms: int
    heartbeat_interval_ms: int
    last_answer: HeartbeatAnswer
    ring_id: int | None = None  # the ring member whose key registered the node


class NodeTracker:
    """Registrations, heartbeats and expiry of the nodes reporting to this RM."""

    def __init__(
        self,
        nodes: NodeTable,
        clock: IReactorTime,
        *,
        nm_expiry_ms: int,
        rm_identifier: int,
        listener: NodeTrackerListener | None = None,
        container_token_master_key: MasterKey | None = None,
        removes_completed_containers: bool = False,
        leave_listener: NodeLeaveListener | None = None,
        leave_max_wait_ms: int = DEFAULT_MAX_WAIT_MS,
    ) -> None:
        if nm_expiry_ms < 3 * MIN_HEARTBEAT_INTERVAL_MS:
            raise ValueError(f"nm_expiry_ms must be at least {3 * MIN_HEARTBEAT_INTERVAL_MS}, not {nm_expiry_ms}")
        self.nodes = nodes
        self.clock = clock
        self.nm_expiry_ms = nm_expiry_ms
        self.rm_identifier = rm_identifier
        self.listener: NodeTrackerListener = listener or IgnoringListener()
        # Handed to every node that registers: the key the RM signs ContainerTokens with.
        self.container_token_master_key = container_token_master_key
        # Said to every node that registers: the listener names completed containers a node may forget.
        self.removes_completed_containers = removes_completed_containers
        self._live: dict[NodeId, _Liveness] = {}
        # graceful leaves the nodes report (node_leave.py)
        self.leaves = NodeLeaves(nodes, leave_listener, leave_max_wait_ms)

    # ---------------------------------------------------------------- figures

    @property
    def max_heartbeat_interval_ms(self) -> int:
        """The longest interval the RM grants: three heartbeats fit in the expiry window."""
        return self.nm_expiry_ms // 3

    @property
    def expiry_check_interval_ms(self) -> int:
        """How often ``expire_silent_nodes`` should run (YARN's monitor: expiry / 3)."""
        return max(1, self.nm_expiry_ms // 3)

    def heartbeat_interval_for(self, requested_ms: int) -> int:
        """The interval granted to a node that asks for ``requested_ms``."""
        return max(MIN_HEARTBEAT_INTERVAL_MS, min(requested_ms, self.max_heartbeat_interval_ms))

    def now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    def bound_fingerprint(self, node_id: NodeId) -> str | None:
        """The key fingerprint ``node_id`` is bound to, if it ever registered here."""
        live = self._live.get(node_id)
        return live.fingerprint if live else None

    def last_seen_ms(self, node_id: NodeId) -> int | None:
        live = self._live.get(node_id)
        return live.last_seen_ms if live else None

    def nodes_by_ring_id(self) -> dict[int, NodeId]:
        """The NodeId each ring member registered (the latest, if one registered several)."""
        return {live.ring_id: node_id for node_id, live in self._live.items() if live.ring_id is not None}

    # ---------------------------------------------------------------- calls

    def _check_owner(self, node_id: NodeId, fingerprint: str, call: str) -> _Liveness | None:
        live = self._live.get(node_id)
        if live is not None and live.fingerprint != fingerprint:
            log.warn(
                "{call} for node {node_id} refused: it is bound to key {bound}, the caller showed {fingerprint}",
                call=call,
                node_id=str(node_id),
                bound=live.fingerprint,
                fingerprint=fingerprint,
            )
            raise NodeRefused(
                f"node {node_id} is registered with another key ({live.fingerprint[:16]}...); "
                f"this connection showed {fingerprint[:16]}..."
            )
        return live

    def register(
        self, registration: NodeRegistration, fingerprint: str, ring_id: int | None = None
    ) -> RegistrationAnswer:
        """A node (re)registers: RUNNING, bound to ``fingerprint``, with the granted interval.

        ``ring_id`` is the ring id of the same key (SHA-1 of it, where the fingerprint
        is SHA-256): when the ring declares that member dead, the node is LOST.
        """
        node_id = registration.node_id
        previous = self._check_owner(node_id, fingerprint, "registerNode")
        now = self.now_ms()
        interval = self.heartbeat_interval_for(registration.heartbeat_interval_ms)
        try:
            state_before: NodeState | None = self.nodes.get(node_id).state
        except UnknownNode:
            state_before = None
        node = self.nodes.register(
            node_id, registration.http_address, registration.capability, now, rack=registration.rack, ring_id=ring_id
        )
        self.leaves.forget(node_id)
        first = HeartbeatAnswer(response_id=0, action=NodeAction.NORMAL, next_heartbeat_interval_ms=interval)
        self._live[node_id] = _Liveness(fingerprint, now, interval, first, ring_id)
        self.listener.node_registered(node)
        self.listener.containers_reported(node, registration.containers)
        if not registration.healthy:  # out of the scheduler at once, before any container is placed
            self.nodes.report(node_id, now, healthy=False, health_report=registration.health_report)
            self.listener.node_health_changed(node)
        if registration.leave is not None:  # leaving already: nothing new is placed here, not for a moment
            self.leaves.report(node, NodeLeave.DECOMMISSIONING, now)
        log.info(
            "node {node_id} registered ({transition}) with {capability}, rack {rack}, "
            "heartbeat every {interval_ms} ms, key {fingerprint}",
            node_id=str(node_id),
            transition=f"{state_before.name if state_before else 'NEW'} -> {node.state.name}",
            capability=str(registration.capability),
            rack=registration.rack,
            interval_ms=interval,
            fingerprint=fingerprint,
            reregistered=previous is not None,
            containers=len(registration.containers),
        )
        return RegistrationAnswer(
            heartbeat_interval_ms=interval,
            rm_identifier=self.rm_identifier,
            container_token_master_key=self.container_token_master_key,
            removes_completed_containers=self.removes_completed_containers,
        )

    def heartbeat(self, status: NodeStatusReport, fingerprint: str) -> HeartbeatAnswer:
        """A node reports: the answer follows YARN's response-id rules (see the module docstring)."""
        node_id = status.node_id
        live = self._check_owner(node_id, fingerprint, "nodeHeartbeat")
        if live is None:
            return self._resync(node_id, "this ResourceManager does not know the node (it restarted?)", 0)
        node = self.nodes.get(node_id)
        if node.state not in ACTIVE_NODE_STATES:
            last = live.last_answer
            if last.decommissioned and next_response_id(status.response_id) == last.response_id:
                log.info("duplicate heartbeat from decommissioned {node_id}: answering again", node_id=str(node_id))
                return last  # (the SHUTDOWN + decommissioned it did not receive)
            return self._resync(node_id, f"the node is {node.state.name} here", live.heartbeat_interval_ms)
        live.last_seen_ms = self.now_ms()
        last = live.last_answer
        if next_response_id(status.response_id) == last.response_id:
            log.info(
                "duplicate heartbeat from {node_id} (response id {response_id}): answering again",
                node_id=str(node_id),
                response_id=status.response_id,
            )
            return last
        if status.response_id != last.response_id:
            return self._resync(
                node_id,
                f"out of step: the node sent response id {status.response_id}, the RM's last was {last.response_id}",
                live.heartbeat_interval_ms,
            )
        state_before = node.state
        self.nodes.report(node_id, live.last_seen_ms, healthy=status.healthy, health_report=status.health_report)
        if node.state is not state_before:
            log.info(
                "node {node_id} {old} -> {new}: {report}",
                node_id=str(node_id),
                old=state_before.name,
                new=node.state.name,
                report=status.health_report,
            )
            self.listener.node_health_changed(node)
        capability = node.capability if status.capability is None else status.capability
        back = node.state is not state_before and not status.offering  # (healthy again: re-added, offering)
        if capability != node.capability or status.offering != node.offering or back:
            log.info("node {node_id}: capability {old} -> {new}, offering {offering}", node_id=str(node_id),
                     old=str(node.capability), new=str(capability), offering=status.offering)
            node.capability, node.offering = capability, status.offering  # (REST and NodeCLI read the record)
            self.listener.node_resized(node)
        self.listener.containers_reported(node, status.containers)
        decommissioned = self.leaves.report(node, status.leave, live.last_seen_ms)
        orders = self.listener.cleanup_for(node)
        answer = HeartbeatAnswer(
            response_id=next_response_id(last.response_id),
            action=NodeAction.SHUTDOWN if decommissioned else NodeAction.NORMAL,
            next_heartbeat_interval_ms=live.heartbeat_interval_ms,
            decommissioned=decommissioned,
            diagnostics="the node is decommissioned" if decommissioned else "",
            containers_to_cleanup=orders.containers_to_cleanup,
            applications_to_cleanup=orders.applications_to_cleanup,
            containers_to_remove=orders.containers_to_remove,
        )
        live.last_answer = answer
        return answer

    def _resync(self, node_id: NodeId, why: str, interval_ms: int) -> HeartbeatAnswer:
        log.info("heartbeat from {node_id}: RESYNC, {why}", node_id=str(node_id), why=why)
        return HeartbeatAnswer(
            response_id=0,
            action=NodeAction.RESYNC,
            next_heartbeat_interval_ms=interval_ms or self.max_heartbeat_interval_ms,
            diagnostics=f"register again: {why}",
        )

    # ---------------------------------------------------------------- expiry

    def silent_nodes(self, now_ms: int) -> Iterable[NodeRecord]:
        """Active nodes whose last sign of life is more than ``nm_expiry_ms`` before ``now_ms``."""
        for node_id, live in self._live.items():
            if now_ms - live.last_seen_ms > self.nm_expiry_ms:
                node = self.nodes.get(node_id)
                if NODE_TRANSITIONS.accepts(node.state, NodeEvent.EXPIRE):
                    yield node

    def expire_silent_nodes(self, now_ms: int | None = None) -> list[NodeRecord]:
        """Mark LOST every node silent past the expiry; the nodes that just became LOST."""
        now = self.now_ms() if now_ms is None else now_ms
        lost = []
        for node in list(self.silent_nodes(now)):
            silent_ms = now - self._live[node.node_id].last_seen_ms
            self._lose(node, f"no report for {silent_ms} ms (expiry {self.nm_expiry_ms} ms)")
            lost.append(node)
        return lost

    def ring_member_died(self, ring_id: int) -> list[NodeRecord]:
        """The ring declared member ``ring_id`` dead: its active nodes are LOST now (not at expiry).

        The ring's verdict is a hint, not proof: any member can gossip a death, and
        gossip is not signed.  A node whose last heartbeat (authenticated, over its
        own TLS connection) is younger than two of its intervals is still alive
        whatever the ring says; it is left alone, and the expiry decides.
        """
        lost = []
        now = self.now_ms()
        for node_id, live in list(self._live.items()):
            if live.ring_id != ring_id:
                continue
            node = self.nodes.get(node_id)
            if not NODE_TRANSITIONS.accepts(node.state, NodeEvent.EXPIRE):
                continue
            silent_ms = now - live.last_seen_ms
            if silent_ms < 2 * live.heartbeat_interval_ms:
                log.warn(
                    "the ring declared the member of node {node_id} dead, but it reported {silent_ms} ms ago; "
                    "keeping it until its reports stop",
                    node_id=str(node_id),
                    silent_ms=silent_ms,
                )
                continue
            self._lose(node, f"the ring declared its member dead (last report {silent_ms} ms ago)")
            lost.append(node)
        return lost

    def _lose(self, node: NodeRecord, why: str) -> None:
        state_before = node.state
        self.nodes.expire(node.node_id)
        self.leaves.forget(node.node_id)
        assert node.state is NodeState.LOST
        log.warn("node {node_id} {old} -> LOST: {why}", node_id=str(node.node_id), old=state_before.name, why=why)
        self.listener.node_lost(node)

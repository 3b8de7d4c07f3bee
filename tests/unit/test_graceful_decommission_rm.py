"""The RM's side of a graceful leave: a node's heartbeats say DECOMMISSIONING, then DRAINED.

The real NodeTracker, ClusterScheduling (scheduler, application table), NameNode and
NodeEvents on a ``Clock``; the only stand-in is the AM launcher of
``test_cluster_scheduling.Cluster``.
"""

from __future__ import annotations

import random

from twisted.internet.task import Clock

from cortex_rm.allocator.asks import ResourceAsk
from cortex_rm.allocator.node_tracker import NodeTracker
from cortex_rm.allocator.node_updates import NodeUpdates
from cortex_rm.allocator.nodes import NodeRecord, NodeState, NodeTable
from cortex_rm.fs.block_map import BlockMap, DataNode, ReportedBlock
from cortex_rm.fs.model import BlockRef
from cortex_rm.fs.name_node import NameNode, fresh_or_recovered
from cortex_rm.fs.namespace_store import MemoryNamespaceStore
from cortex_rm.roles.rm_node_events import NodeEvents
from cortex_rm.yarn.container_status import ContainerExitStatus, ContainerState
from cortex_rm.yarn.ids import NodeId
from cortex_rm.yarn.resource_tracker import (
    ContainerReport,
    NodeAction,
    NodeLeave,
    NodeRegistration,
    NodeStatusReport,
)
from cortex_rm.yarn.resources import Resource
from cortex_rm.yarn.tokens import MasterKey
from tests.unit.test_cluster_scheduling import N1, N2, Cluster

KEY = "a" * 64
EXPIRY_MS = 10_000


class Rig:
    """A cluster of two nodes registered through a NodeTracker whose listeners are the RM's NodeEvents."""

    def __init__(self, max_wait_ms: int = 120_000, reported: tuple[NodeId, ...] = (N1, N2)) -> None:
        self.cluster = Cluster()
        clock: Clock = self.cluster.clock
        namespace, _ = fresh_or_recovered([], "root", "supergroup", int(clock.seconds() * 1000))
        name_node = NameNode(namespace, BlockMap(clock, random.Random(1)), MemoryNamespaceStore(), MasterKey(1, b"k" * 32), clock)
        self.events = NodeEvents(self.cluster.service, name_node, NodeUpdates())
        self.blocks = name_node.blocks
        self.tracker = NodeTracker(
            self.cluster.nodes, clock, nm_expiry_ms=EXPIRY_MS, rm_identifier=1,
            listener=self.events, leave_listener=self.events, leave_max_wait_ms=max_wait_ms,
        )  # fmt: skip
        self.response_ids = {N1: 0, N2: 0}
        self.name_node = name_node
        for node_id in reported:  # (registered, and their full block reports received)
            self.register(node_id)
            self.blocks.node_up(DataNode(str(node_id), f"{node_id.host}:8042"))
            self.blocks.full_report(str(node_id), [])

    def block_on(self, node_id: NodeId, n: int) -> BlockRef:
        """A block of a file with replication 1 whose only replica ``node_id`` holds."""
        block = BlockRef(f"blk_{n:032x}", 10, f"{n:032x}")
        self.blocks.add_blocks([block], 1)
        self.blocks.replica_written(str(node_id), block)
        return block

    def register(self, node_id: NodeId, leave: NodeLeave | None = None) -> None:
        self.tracker.register(
            NodeRegistration(node_id, f"{node_id.host}:8042", "/default-rack", Resource(8192, 8), 1000, leave=leave),
            KEY + str(node_id),
        )
        self.response_ids[node_id] = 0

    def heartbeat(self, node_id: NodeId, leave: NodeLeave | None = None, containers: tuple[ContainerReport, ...] = ()):  # type: ignore[no-untyped-def]
        answer = self.tracker.heartbeat(
            NodeStatusReport(node_id, self.response_ids[node_id], containers=containers, leave=leave), KEY + str(node_id)
        )
        self.response_ids[node_id] = answer.response_id
        return answer

    def node(self, node_id: NodeId) -> NodeRecord:
        return self.cluster.nodes.get(node_id)


def test_a_leaving_node_is_decommissioning_takes_no_new_containers_and_keeps_its_running_ones() -> None:
    """DECOMMISSIONING in a heartbeat: the node's state says so, its executor runs on, new asks go elsewhere."""
    rig = Rig()
    app, am = rig.cluster.running_app()
    attempt_id = app.current_attempt.attempt_id  # type: ignore[union-attr]
    other = N2 if am.node_id == N1 else N1
    ask = ResourceAsk(priority=0, resource_name="*", capability=Resource(1024, 1), num_containers=2)
    first = rig.cluster.service.allocate(attempt_id, [ask], [], [], [], 0.1).allocated
    on_other = [c for c in first if c.node_id == other]
    assert on_other, "spread placement puts an executor on the node without the AM"

    answer = rig.heartbeat(other, NodeLeave.DECOMMISSIONING)
    assert answer.action is NodeAction.NORMAL and not answer.decommissioned
    assert rig.node(other).state is NodeState.DECOMMISSIONING
    more = ResourceAsk(priority=0, resource_name="*", capability=Resource(1024, 1), num_containers=4)
    later = rig.cluster.service.allocate(attempt_id, [more], [], [], [], 0.2).allocated
    rig.cluster.settle()
    later += rig.cluster.service.allocate(attempt_id, [], [], [], [], 0.3).allocated
    assert later and all(c.node_id == am.node_id for c in later)
    assert all(rig.cluster.scheduler.container(c.container_id) is not None for c in on_other)  # still running
    # an ask for the leaving host itself is not placed there either
    local = ResourceAsk(priority=1, resource_name=other.host, capability=Resource(1024, 1), num_containers=1, relax_locality=False)
    placed = rig.cluster.service.allocate(attempt_id, [local], [], [], [], 0.4).allocated
    rig.cluster.settle()
    placed += rig.cluster.service.allocate(attempt_id, [], [], [], [], 0.5).allocated
    assert not [c for c in placed if c.node_id == other]


def test_the_ams_hear_of_the_decommissioning_node_once() -> None:
    """The change is in NodeUpdates: a session started before it gets the node's report, once."""
    rig = Rig()
    updates = rig.events.updates
    cursor = updates.cursor()
    rig.heartbeat(N2, NodeLeave.DECOMMISSIONING)
    rig.heartbeat(N2, NodeLeave.DECOMMISSIONING)  # no second change
    reports, cursor = updates.since(cursor)
    assert [(r.node_id, r.state) for r in reports] == [(N2, NodeState.DECOMMISSIONING)]
    assert updates.since(cursor)[0] == []


def test_a_drained_node_is_decommissioned_not_lost_and_what_it_had_ends_killed_by_the_rm() -> None:
    """DRAINED: DECOMMISSIONED, the answer SHUTDOWN + decommissioned; a container the RM still had there
    ends KILLED_BY_RESOURCEMANAGER (-106), not ABORTED (-100) as on a lost node."""
    rig = Rig()
    app, am = rig.cluster.running_app()
    attempt_id = app.current_attempt.attempt_id  # type: ignore[union-attr]
    other = N2 if am.node_id == N1 else N1
    ask = ResourceAsk(priority=0, resource_name="*", capability=Resource(1024, 1), num_containers=2)
    executors = [c for c in rig.cluster.service.allocate(attempt_id, [ask], [], [], [], 0.1).allocated if c.node_id == other]
    assert executors
    rig.heartbeat(other, NodeLeave.DECOMMISSIONING)
    done = ContainerReport(executors[0].container_id, ContainerState.COMPLETE, 0, "finished")
    answer = rig.heartbeat(other, NodeLeave.DRAINED, (done,) + tuple(
        ContainerReport(c.container_id, ContainerState.COMPLETE, ContainerExitStatus.KILLED_BY_RESOURCEMANAGER, "killed")
        for c in executors[1:]
    ))
    assert answer.action is NodeAction.SHUTDOWN and answer.decommissioned
    assert rig.node(other).state is NodeState.DECOMMISSIONED
    completed = rig.cluster.service.allocate(attempt_id, [], [], [], [], 0.2).completed
    assert {c.container_id: c.exit_status for c in completed} == {
        c.container_id: 0 if c is executors[0] else ContainerExitStatus.KILLED_BY_RESOURCEMANAGER for c in executors
    }
    assert rig.cluster.nodes.count(NodeState.LOST) == 0


def test_containers_the_node_did_not_report_end_killed_by_the_rm_when_it_is_decommissioned() -> None:
    """A container the scheduler still holds on the node when it goes ends -106, never -100."""
    rig = Rig()
    app, am = rig.cluster.running_app()
    attempt_id = app.current_attempt.attempt_id  # type: ignore[union-attr]
    other = N2 if am.node_id == N1 else N1
    ask = ResourceAsk(priority=0, resource_name="*", capability=Resource(1024, 1), num_containers=2)
    executors = [c for c in rig.cluster.service.allocate(attempt_id, [ask], [], [], [], 0.1).allocated if c.node_id == other]
    rig.heartbeat(other, NodeLeave.DRAINED)
    completed = rig.cluster.service.allocate(attempt_id, [], [], [], [], 0.2).completed
    assert executors and {c.exit_status for c in completed} == {ContainerExitStatus.KILLED_BY_RESOURCEMANAGER}


def test_a_drained_node_waits_until_its_blocks_are_copied_elsewhere() -> None:
    """Its replicas do not count while it leaves: the other node is told to fetch the block, and the
    leaving node is DECOMMISSIONED only once that copy is reported."""
    rig = Rig()
    block = rig.block_on(N2, 1)
    assert rig.heartbeat(N2, NodeLeave.DRAINED).action is NodeAction.NORMAL
    assert rig.node(N2).state is NodeState.DECOMMISSIONING
    (order,) = rig.blocks.commands(str(N1)).fetch
    assert order.block_id == block.block_id and [s.node_id for s in order.sources] == [str(N2)]
    assert not rig.heartbeat(N2, NodeLeave.DRAINED).decommissioned
    rig.blocks.incremental_report(str(N1), [ReportedBlock(block.block_id, block.length, block.checksum, 0)], [])
    assert rig.heartbeat(N2, NodeLeave.DRAINED).decommissioned
    assert rig.node(N2).state is NodeState.DECOMMISSIONED


def test_a_drained_node_whose_blocks_cannot_be_copied_goes_after_the_bound() -> None:
    """Nothing copies its block (no other node reports): DECOMMISSIONED anyway once the bound passes."""
    rig = Rig(max_wait_ms=5_000)
    rig.block_on(N2, 1)
    assert rig.heartbeat(N2, NodeLeave.DRAINED).action is NodeAction.NORMAL
    rig.cluster.clock.advance(4)
    assert rig.heartbeat(N2, NodeLeave.DRAINED).action is NodeAction.NORMAL
    rig.cluster.clock.advance(1)
    assert rig.heartbeat(N2, NodeLeave.DRAINED).decommissioned
    assert rig.node(N2).state is NodeState.DECOMMISSIONED


def test_a_decommissioned_node_that_registers_again_is_running_and_schedulable() -> None:
    """A node that comes back after DECOMMISSIONED is RUNNING and takes containers again."""
    rig = Rig()
    rig.heartbeat(N2, NodeLeave.DRAINED)
    assert rig.node(N2).state is NodeState.DECOMMISSIONED
    # its heartbeats are no longer accepted: it must register again
    assert rig.heartbeat(N2).action is NodeAction.RESYNC
    rig.register(N2)
    assert rig.node(N2).state is NodeState.RUNNING
    app, am = rig.cluster.running_app()
    attempt_id = app.current_attempt.attempt_id  # type: ignore[union-attr]
    ask = ResourceAsk(priority=0, resource_name="*", capability=Resource(1024, 1), num_containers=4)
    got = rig.cluster.service.allocate(attempt_id, [ask], [], [], [], 0.1).allocated
    assert N2 in {c.node_id for c in got} | {am.node_id}


def test_a_decommissioning_node_that_falls_silent_is_lost() -> None:
    rig = Rig()
    rig.heartbeat(N2, NodeLeave.DECOMMISSIONING)
    rig.cluster.clock.advance(EXPIRY_MS / 1000 + 1)
    rig.heartbeat(N1)
    lost = rig.tracker.expire_silent_nodes()
    assert [n.node_id for n in lost] == [N2] and rig.node(N2).state is NodeState.LOST


def test_a_decommissioning_node_that_registers_again_is_running() -> None:
    """It restarted (or the RM did) mid-leave: RUNNING, until its heartbeats say it leaves again."""
    rig = Rig()
    rig.heartbeat(N2, NodeLeave.DECOMMISSIONING)
    rig.register(N2)
    assert rig.node(N2).state is NodeState.RUNNING
    rig.heartbeat(N2, NodeLeave.DECOMMISSIONING)
    assert rig.node(N2).state is NodeState.DECOMMISSIONING


def test_allocate_tells_the_am_of_the_decommissioning_node_in_updated_nodes() -> None:
    """ApplicationMasterProtocol: the AM's next AllocateResponse carries the node's report with
    NS_DECOMMISSIONING (what Spark's YarnAllocator reads), and the one after does not repeat it."""
    from cortex_rm.yarn_api.am_service import ApplicationMasterService
    from cortex_rm.yarn_api.proto import yarn_protos_pb2 as yp
    from cortex_rm.yarn_api.proto import yarn_service_protos_pb2 as ys

    rig = Rig()
    clock = rig.cluster.clock
    service = ApplicationMasterService(
        rig.cluster.service, MasterKey(1, b"c" * 32), 1, lambda: int(clock.seconds() * 1000), rig.events.updates
    )
    app = rig.cluster.running_app()[0]
    attempt_id = app.current_attempt.attempt_id  # type: ignore[union-attr]
    service._new_session(attempt_id)  # (what a registerApplicationMaster call does first)
    first = service.allocate(attempt_id, ys.AllocateRequestProto(response_id=0))
    assert list(first.updated_nodes) == []
    rig.heartbeat(N2, NodeLeave.DECOMMISSIONING)
    second = service.allocate(attempt_id, ys.AllocateRequestProto(response_id=first.response_id))
    (report,) = second.updated_nodes
    assert (report.nodeId.host, report.nodeId.port, report.node_state) == (N2.host, N2.port, yp.NS_DECOMMISSIONING)
    third = service.allocate(attempt_id, ys.AllocateRequestProto(response_id=second.response_id))
    assert list(third.updated_nodes) == []
    rig.heartbeat(N2, NodeLeave.DRAINED)
    (gone,) = service.allocate(attempt_id, ys.AllocateRequestProto(response_id=third.response_id)).updated_nodes
    assert gone.node_state == yp.NS_DECOMMISSIONED

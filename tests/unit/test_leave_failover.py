"""A graceful leave across an RM failover: a fresh RM (NodeTracker, NameNode, NodeEvents on a ``Clock``,
``test_graceful_decommission_rm.Rig``) hears from a node that was leaving under the old one and holds the
only replica of a block."""

from __future__ import annotations

from cortex_rm.allocator.asks import ResourceAsk
from cortex_rm.allocator.nodes import NodeState
from cortex_rm.fs.block_map import DataNode, ReportedBlock
from cortex_rm.fs.model import BlockRef
from cortex_rm.yarn.resource_tracker import NodeAction, NodeLeave
from cortex_rm.yarn.resources import Resource
from tests.unit.test_cluster_scheduling import N1, N2
from tests.unit.test_graceful_decommission_rm import Rig


def fresh_rm_with_a_block_only_n2_holds() -> tuple[Rig, BlockRef]:
    """The new RM: N1 registered and reported already; the namespace (recovered) names a block of
    replication 1 whose only replica is on N2, from which this RM has heard nothing yet."""
    rig = Rig(reported=(N1,))
    block = BlockRef(f"blk_{1:032x}", 10, f"{1:032x}")
    rig.blocks.add_blocks([block], 1)
    return rig, block


def full_report(rig: Rig, node_id: object, *blocks: BlockRef) -> None:
    reported = [ReportedBlock(b.block_id, b.length, b.checksum, 60_000) for b in blocks]
    rig.name_node.node_report(DataNode(str(node_id), f"{node_id}"), True, reported, [])


def test_a_drained_node_waits_for_its_first_full_block_report_after_a_failover() -> None:
    """Its first heartbeat to the new RM already says DRAINED: the new RM does not know its replicas
    yet, so it waits for the node's full report, then for the copy of the block held only there."""
    rig, block = fresh_rm_with_a_block_only_n2_holds()
    rig.register(N2)
    answer = rig.heartbeat(N2, NodeLeave.DRAINED)
    assert answer.action is NodeAction.NORMAL and not answer.decommissioned
    assert rig.node(N2).state is NodeState.DECOMMISSIONING
    assert rig.events.waiting_for(rig.node(N2)) == "the node's first full block report"
    full_report(rig, N2, block)
    assert not rig.heartbeat(N2, NodeLeave.DRAINED).decommissioned  # the block is on N2 alone
    (order,) = rig.blocks.commands(str(N1)).fetch
    assert order.block_id == block.block_id
    rig.blocks.incremental_report(str(N1), [ReportedBlock(block.block_id, block.length, block.checksum, 0)], [])
    assert rig.heartbeat(N2, NodeLeave.DRAINED).decommissioned
    assert rig.node(N2).state is NodeState.DECOMMISSIONED


def test_a_leaving_node_that_registers_with_a_new_rm_is_never_schedulable() -> None:
    """The failover mid-leave: the registration says DRAINED, so the node is DECOMMISSIONING from the
    registration on (no container is placed there meanwhile), and DECOMMISSIONED once its full report
    is in and its only replica copied."""
    rig, block = fresh_rm_with_a_block_only_n2_holds()
    rig.register(N2, leave=NodeLeave.DRAINED)
    assert rig.node(N2).state is NodeState.DECOMMISSIONING
    app, am = rig.cluster.running_app()
    attempt_id = app.current_attempt.attempt_id  # type: ignore[union-attr]
    ask = ResourceAsk(priority=0, resource_name="*", capability=Resource(1024, 1), num_containers=4)
    placed = rig.cluster.service.allocate(attempt_id, [ask], [], [], [], 0.1).allocated
    rig.cluster.settle()
    placed += rig.cluster.service.allocate(attempt_id, [], [], [], [], 0.2).allocated
    assert am.node_id == N1 and placed and {c.node_id for c in placed} == {N1}
    assert not rig.heartbeat(N2, NodeLeave.DRAINED).decommissioned  # no full report yet
    full_report(rig, N2, block)
    assert rig.node(N2).state is NodeState.DECOMMISSIONING and not rig.heartbeat(N2, NodeLeave.DRAINED).decommissioned
    rig.blocks.incremental_report(str(N1), [ReportedBlock(block.block_id, block.length, block.checksum, 0)], [])
    answer = rig.heartbeat(N2, NodeLeave.DRAINED)
    assert answer.action is NodeAction.SHUTDOWN and answer.decommissioned


def test_a_lost_decommissioned_answer_is_answered_again_not_resynced() -> None:
    """The SHUTDOWN + decommissioned answer is lost: the node sends the same heartbeat again (same
    response id) and gets the same answer, instead of a RESYNC that would make it register again."""
    rig = Rig()
    sent = rig.response_ids[N2]
    first = rig.heartbeat(N2, NodeLeave.DRAINED)
    assert first.decommissioned and rig.node(N2).state is NodeState.DECOMMISSIONED
    rig.response_ids[N2] = sent
    assert rig.heartbeat(N2, NodeLeave.DRAINED) == first
    assert rig.heartbeat(N2, NodeLeave.DRAINED).action is NodeAction.RESYNC  # out of step: as before

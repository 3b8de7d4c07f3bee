"""The NameNode's block map: which live node holds what, and the delete and fetch orders it answers
each report with.

Scenario tests name the situation; a table checks the replica arithmetic; a seeded simulation of
nodes that obey the orders checks the map's promises under random sequences of node, file and
report events.  Time is a ``twisted.internet.task.Clock``; randomness is a seeded ``random.Random``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
from twisted.internet.task import Clock

from cortex_rm.fs.block_map import BlockMap, DataNode, FetchOrder, NodeCommands, ReportedBlock
from cortex_rm.fs.errors import NotEnoughDataNodes
from cortex_rm.fs.model import BlockRef

GRACE_MS = 600_000
TIMEOUT_S = 300.0
NOTHING = NodeCommands()


def dn(i: int) -> DataNode:
    return DataNode(f"n{i}:8041", f"n{i}:8042")


def nid(i: int) -> str:
    return dn(i).node_id


def ref(i: int, length: int = 100) -> BlockRef:
    return BlockRef(f"blk_{i:032x}", length, f"{i:032x}")


def rep(block: BlockRef, age_ms: int = 0, *, checksum: str | None = None, length: int | None = None) -> ReportedBlock:
    return ReportedBlock(
        block.block_id, block.length if length is None else length, checksum or block.checksum, age_ms
    )


def ids(nodes: list[DataNode] | tuple[DataNode, ...]) -> set[str]:
    return {node.node_id for node in nodes}


def cluster(nodes: int, clock: Clock | None = None, **kwargs: int) -> BlockMap:
    """A map with nodes 1..nodes up and live (each sent an empty full report)."""
    block_map = BlockMap(clock or Clock(), random.Random(7), **kwargs)
    for i in range(1, nodes + 1):
        block_map.node_up(dn(i))
        block_map.full_report(nid(i), [])
    return block_map


def write(block_map: BlockMap, block: BlockRef, replication: int, on: list[int]) -> None:
    """A committed file's block written by a pipeline through the nodes ``on``."""
    block_map.add_blocks([block], replication)
    for i in on:
        block_map.replica_written(nid(i), block)


def answers(block_map: BlockMap, nodes: list[int]) -> dict[int, NodeCommands]:
    return {i: block_map.commands(nid(i)) for i in nodes}


def fetch_targets(commands: dict[int, NodeCommands], block: BlockRef) -> list[int]:
    return sorted(i for i, c in commands.items() for order in c.fetch if order.block_id == block.block_id)


# ------------------------------------------------------------- nodes: up, live, lost


def test_a_node_counts_only_after_its_first_full_report() -> None:
    """node_up alone: the node owes a full report (asked for in its commands), is not live, gets no
    work, and its incremental reports and written replicas are ignored; the full report makes it live."""
    block_map = BlockMap(Clock(), random.Random(1))
    block = ref(1)
    block_map.add_blocks([block], 1)
    block_map.node_up(dn(1))
    assert block_map.needs_full_report(nid(1))
    assert block_map.live_nodes() == []
    block_map.incremental_report(nid(1), [rep(block)], [])
    block_map.replica_written(nid(1), block)
    assert block_map.locations(block.block_id) == []
    assert block_map.commands(nid(1)) == NodeCommands(full_report_wanted=True)
    block_map.full_report(nid(1), [rep(block, 5)])
    assert not block_map.needs_full_report(nid(1))
    assert block_map.live_nodes() == [dn(1)]
    assert block_map.locations(block.block_id) == [dn(1)]
    assert block_map.commands(nid(1)) == NOTHING


def test_reports_from_a_node_that_is_not_up_are_ignored() -> None:
    """A full report from a node never registered (or lost) changes nothing and asks for nothing."""
    block_map = cluster(1)
    block = ref(1)
    write(block_map, block, 1, [1])
    block_map.full_report(nid(9), [rep(block)])
    assert ids(block_map.locations(block.block_id)) == {nid(1)}
    assert not block_map.needs_full_report(nid(9))
    assert block_map.commands(nid(9)) == NOTHING
    assert block_map.live_nodes() == [dn(1)]


def test_a_lost_node_stops_counting_and_must_report_in_full_when_it_is_back() -> None:
    """node_lost: the node's replicas stop counting at once; its orders are dropped; back up, it
    counts again only after its full report."""
    block_map = cluster(3)
    block = ref(1)
    write(block_map, block, 3, [1, 2, 3])
    block_map.remove_blocks([])  # nothing
    block_map.node_lost(nid(1))
    assert ids(block_map.locations(block.block_id)) == {nid(2), nid(3)}
    assert block_map.holders_of(nid(1)) == 0
    assert not block_map.needs_full_report(nid(1))
    block_map.incremental_report(nid(1), [rep(block)], [])  # not up: ignored
    block_map.node_up(dn(1))
    assert block_map.needs_full_report(nid(1))
    assert block_map.locations(block.block_id) != [] and len(block_map.locations(block.block_id)) == 2
    block_map.full_report(nid(1), [rep(block, 5_000)])
    assert len(block_map.locations(block.block_id)) == 3
    assert all(c == NOTHING for c in answers(block_map, [1, 2, 3]).values())


def test_node_up_again_updates_the_address_fetch_orders_and_locations_name() -> None:
    """node_up for a node already up (each report does it) keeps it live and takes its new web address."""
    block_map = cluster(2)
    block = ref(1)
    write(block_map, block, 2, [1])
    moved = DataNode(nid(1), "n1:9999")
    block_map.node_up(moved)
    assert not block_map.needs_full_report(nid(1))
    assert block_map.locations(block.block_id) == [moved]
    assert block_map.commands(nid(2)).fetch == (FetchOrder(block.block_id, 100, block.checksum, (moved,)),)


def test_a_full_report_replaces_what_the_node_was_known_to_hold() -> None:
    """A block missing from a node's new full report no longer counts there."""
    block_map = cluster(2)
    a, b = ref(1), ref(2)
    write(block_map, a, 1, [1])
    write(block_map, b, 1, [1])
    block_map.full_report(nid(1), [rep(b, 10)])
    assert block_map.locations(a.block_id) == []
    assert block_map.missing() == [a.block_id]
    assert block_map.holders_of(nid(1)) == 1


def test_live_nodes_are_the_nodes_that_reported_in_full_sorted_by_id() -> None:
    """live_nodes lists exactly the up nodes that sent a full report since, by node id."""
    block_map = cluster(3)
    block_map.node_up(dn(4))
    block_map.node_lost(nid(2))
    assert block_map.live_nodes() == [dn(1), dn(3)]


# ------------------------------------------------------------- re-replication


def test_a_lost_holder_is_replaced_by_one_fetch_on_a_node_without_the_block() -> None:
    """Three replicas on four nodes, a holder lost: only the fourth node is told to fetch, from the two
    live holders; the order counts as a replica (no second order), and ends when the target reports."""
    block_map = cluster(4)
    block = ref(1)
    write(block_map, block, 3, [1, 2, 3])
    assert all(c == NOTHING for c in answers(block_map, [1, 2, 3, 4]).values())
    block_map.node_lost(nid(1))
    assert block_map.under_replicated() == 1
    commands = answers(block_map, [2, 3, 4])
    assert commands[2] == commands[3] == NOTHING
    (order,) = commands[4].fetch
    assert (order.block_id, order.length, order.checksum) == (block.block_id, block.length, block.checksum)
    assert ids(order.sources) == {nid(2), nid(3)}
    assert all(c == NOTHING for c in answers(block_map, [2, 3, 4]).values())
    block_map.incremental_report(nid(4), [rep(block)], [])
    assert ids(block_map.locations(block.block_id)) == {nid(2), nid(3), nid(4)}
    assert block_map.under_replicated() == 0


def test_a_replica_the_node_says_it_removed_is_replaced() -> None:
    """An incremental report removing a replica drops that holder and brings a fetch order elsewhere."""
    block_map = cluster(3)
    block = ref(1)
    write(block_map, block, 2, [1, 2])
    block_map.incremental_report(nid(1), [], [block.block_id])
    assert ids(block_map.locations(block.block_id)) == {nid(2)}
    assert fetch_targets(answers(block_map, [1, 2, 3]), block) in ([1], [3])


def test_a_fetch_that_never_completes_is_ordered_again_after_the_pending_timeout() -> None:
    """A fetch whose target never reports the block holds its place until pending_timeout_ms has
    passed (on the fake clock), and is planned again then, not before."""
    clock = Clock()
    block_map = cluster(3, clock)
    block = ref(1)
    write(block_map, block, 2, [1])
    assert len(fetch_targets(answers(block_map, [2, 3]), block)) == 1
    clock.advance(TIMEOUT_S - 0.001)
    assert fetch_targets(answers(block_map, [2, 3]), block) == []
    clock.advance(0.001)
    assert len(fetch_targets(answers(block_map, [2, 3]), block)) == 1


def test_a_custom_pending_timeout_is_honoured() -> None:
    """pending_timeout_ms is a constructor argument, in milliseconds."""
    clock = Clock()
    block_map = cluster(2, clock, pending_timeout_ms=5_000)
    block = ref(1)
    write(block_map, block, 2, [1])
    assert fetch_targets(answers(block_map, [2]), block) == [2]
    clock.advance(4.999)
    assert fetch_targets(answers(block_map, [2]), block) == []
    clock.advance(0.001)
    assert fetch_targets(answers(block_map, [2]), block) == [2]


def test_a_lost_target_cancels_its_pending_fetch() -> None:
    """The node told to fetch is lost: the block is planned at once on another node."""
    block_map = cluster(3)
    block = ref(1)
    write(block_map, block, 2, [1])
    (target,) = fetch_targets(answers(block_map, [2, 3]), block)
    other = 5 - target
    block_map.node_lost(nid(target))
    assert fetch_targets(answers(block_map, [other]), block) == [other]


def test_fetch_orders_per_report_are_capped() -> None:
    """Ten under-replicated blocks, max_fetches_per_report=4: the one node that can fetch gets 4, 4,
    then 2, then nothing; each block exactly once."""
    block_map = cluster(2, max_fetches_per_report=4)
    blocks = [ref(i) for i in range(10)]
    for block in blocks:
        write(block_map, block, 2, [1])
    fetched: list[str] = []
    for expected in (4, 4, 2, 0):
        orders = block_map.commands(nid(2)).fetch
        assert len(orders) == expected
        fetched += [order.block_id for order in orders]
    assert sorted(fetched) == sorted(b.block_id for b in blocks)


def test_a_node_is_ordered_no_more_copies_than_its_reported_room_holds() -> None:
    """Re-replication respects a node's disk cap: with room for two blocks it is ordered two; with
    room for none, nothing (the blocks wait for another node)."""
    block_map = cluster(2, max_fetches_per_report=10)
    blocks = [ref(i) for i in range(5)]
    for block in blocks:
        write(block_map, block, 2, [1])
    block_map.free[nid(2)] = 2 * blocks[0].length + 1
    assert len(block_map.commands(nid(2)).fetch) == 2
    block_map.free[nid(2)] = 0
    assert block_map.commands(nid(2)).fetch == ()


def test_the_blocks_with_fewest_live_replicas_are_fetched_first() -> None:
    """With room for one order, a block with one live replica goes before one with three."""
    block_map = cluster(4, max_fetches_per_report=1)
    safe, endangered = ref(1), ref(2)
    write(block_map, safe, 4, [1, 2, 3])
    write(block_map, endangered, 4, [1])
    assert [o.block_id for o in block_map.commands(nid(4)).fetch] == [endangered.block_id]


def test_replication_above_the_live_nodes_is_capped_and_grows_when_nodes_join() -> None:
    """A 3-replica block on a 2-node cluster gets 2 replicas and then no more orders (it is not counted
    under-replicated: it has all the live nodes allow); when a third node joins, that node is told to
    fetch the third replica."""
    block_map = cluster(2)
    block = ref(1)
    write(block_map, block, 3, [1])
    (order,) = block_map.commands(nid(2)).fetch
    assert order.sources == (dn(1),)
    block_map.incremental_report(nid(2), [rep(block)], [])
    for _ in range(3):
        assert all(c == NOTHING for c in answers(block_map, [1, 2]).values())
    assert block_map.under_replicated() == 0
    block_map.node_up(dn(3))
    block_map.full_report(nid(3), [])
    (order,) = block_map.commands(nid(3)).fetch
    assert (order.block_id, ids(order.sources)) == (block.block_id, {nid(1), nid(2)})


def test_raised_replication_brings_fetch_orders() -> None:
    """set_replication from 1 to 3 on a 3-node cluster: both other nodes are told to fetch."""
    block_map = cluster(3)
    block = ref(1)
    write(block_map, block, 1, [2])
    assert all(c == NOTHING for c in answers(block_map, [1, 2, 3]).values())
    block_map.set_replication([block.block_id, ref(99).block_id], 3)  # an unknown id is ignored
    assert fetch_targets(answers(block_map, [1, 2, 3]), block) == [1, 3]


# ------------------------------------------------------------- deletes


def test_lowered_replication_trims_the_extra_replicas() -> None:
    """set_replication from 3 to 1: two of the three holders are told to delete, one keeps it, nobody fetches."""
    block_map = cluster(3)
    block = ref(1)
    write(block_map, block, 3, [1, 2, 3])
    block_map.set_replication([block.block_id], 1)
    commands = answers(block_map, [1, 2, 3])
    deleted = {i for i, c in commands.items() if c.delete == (block.block_id,)}
    assert len(deleted) == 2
    assert ids(block_map.locations(block.block_id)) == {nid(i) for i in {1, 2, 3} - deleted}
    assert all(c.fetch == () for c in commands.values())
    assert all(c == NOTHING for c in answers(block_map, [1, 2, 3]).values())


@pytest.mark.parametrize("seed", range(20))
def test_write_pipelines_take_static_nodes_first_and_extra_replicas_leave_the_others(seed: int) -> None:
    """prefer(): after the writer's own node, a pipeline takes the preferred (static) nodes; trimming keeps them."""
    block_map = BlockMap(Clock(), random.Random(seed))
    for i in range(1, 7):
        block_map.node_up(dn(i))
        block_map.full_report(nid(i), [])
    block_map.prefer([nid(5), nid(6)])
    pipeline = [n.node_id for n in block_map.choose_targets(3, writer=nid(1))]
    assert pipeline[0] == nid(1) and set(pipeline[1:]) == {nid(5), nid(6)}
    assert {n.node_id for n in block_map.choose_targets(2)} == {nid(5), nid(6)}
    block = ref(1)
    write(block_map, block, 4, [1, 2, 5, 6])
    block_map.set_replication([block.block_id], 2)
    answers(block_map, [1, 2, 5, 6])
    assert ids(block_map.locations(block.block_id)) == {nid(5), nid(6)}


def test_a_removed_files_replicas_are_deleted_on_every_holder() -> None:
    """remove_blocks: every live holder is told to delete; the block is forgotten (no location, not
    missing, not under-replicated)."""
    block_map = cluster(4)
    block = ref(1)
    write(block_map, block, 3, [1, 2, 4])
    block_map.remove_blocks([block.block_id])
    commands = answers(block_map, [1, 2, 3, 4])
    assert {i for i, c in commands.items() if c.delete == (block.block_id,)} == {1, 2, 4}
    assert commands[3] == NOTHING
    assert block_map.locations(block.block_id) == []
    assert block_map.missing() == [] and block_map.under_replicated() == 0
    assert block_map.holders_of(nid(1)) == 0


def test_removing_a_block_being_fetched_cancels_the_fetch() -> None:
    """A block removed while a fetch is pending: no further orders for it anywhere."""
    block_map = cluster(3)
    block = ref(1)
    write(block_map, block, 3, [1])
    assert fetch_targets(answers(block_map, [2, 3]), block) == [2, 3]
    block_map.remove_blocks([block.block_id])
    commands = answers(block_map, [1, 2, 3])
    assert commands[1].delete == (block.block_id,)
    assert fetch_targets(commands, block) == []


@pytest.mark.parametrize(
    "bad", [{"checksum": "f" * 32}, {"length": 99}, {"length": 101}], ids=["checksum", "shorter", "longer"]
)
def test_a_corrupt_replica_is_deleted_and_replaced(bad: dict[str, object]) -> None:
    """A replica reported with another checksum or length does not count; its node is told to delete
    it, and a node with no copy is told to fetch the block from the good holders."""
    block_map = cluster(4)
    block = ref(1)
    write(block_map, block, 3, [1, 2, 3])
    block_map.incremental_report(nid(1), [rep(block, **bad)], [])  # type: ignore[arg-type]
    assert ids(block_map.locations(block.block_id)) == {nid(2), nid(3)}
    commands = answers(block_map, [1, 2, 3, 4])
    assert commands[1].delete == (block.block_id,)
    assert fetch_targets(commands, block) == [4]
    assert ids(commands[4].fetch[0].sources) == {nid(2), nid(3)}


def test_a_node_is_never_told_to_delete_and_fetch_the_same_block_at_once() -> None:
    """The only node without a good copy holds a corrupt one: its answer deletes it, and only a later
    answer (after the delete) orders the fetch — never both in one answer, whose orders a node runs
    concurrently."""
    block_map = cluster(2)
    block = ref(1)
    write(block_map, block, 2, [1])
    block_map.incremental_report(nid(2), [rep(block, checksum="e" * 32)], [])
    first = block_map.commands(nid(2))
    assert first.delete == (block.block_id,)
    assert first.fetch == ()
    block_map.incremental_report(nid(2), [], [block.block_id])
    assert [o.block_id for o in block_map.commands(nid(2)).fetch] == [block.block_id]


def test_an_old_orphan_is_deleted_a_young_one_kept_then_deleted_when_its_grace_ends() -> None:
    """A replica of no file is deleted if reported at least orphan_grace_ms old; a younger one is kept
    (its commit may be on its way), and deleted once the grace period has passed on the clock."""
    clock = Clock()
    block_map = cluster(1, clock)
    old, young = ref(1), ref(2)
    block_map.full_report(nid(1), [rep(old, GRACE_MS), rep(young, GRACE_MS - 10_000)])
    assert block_map.commands(nid(1)).delete == (old.block_id,)
    clock.advance(9.999)
    assert block_map.commands(nid(1)).delete == ()
    clock.advance(0.001)
    assert block_map.commands(nid(1)).delete == (young.block_id,)
    assert block_map.commands(nid(1)) == NOTHING


def test_a_young_orphan_whose_file_is_committed_is_kept_and_counted() -> None:
    """A replica reported before its file's commit is not deleted once the commit names it (and the
    write pipeline's replica_written makes it count)."""
    clock = Clock()
    block_map = cluster(1, clock)
    block = ref(1)
    block_map.incremental_report(nid(1), [rep(block)], [])
    write(block_map, block, 1, [1])
    clock.advance(GRACE_MS / 1000 + 1)
    assert block_map.commands(nid(1)) == NOTHING
    assert block_map.locations(block.block_id) == [dn(1)]


def test_an_orphan_grace_of_zero_deletes_every_unknown_replica() -> None:
    """orphan_grace_ms is a constructor argument: with 0 even a brand-new unknown replica is deleted."""
    block_map = cluster(1, orphan_grace_ms=0)
    block_map.incremental_report(nid(1), [rep(ref(5))], [])
    assert block_map.commands(nid(1)).delete == (ref(5).block_id,)


def test_an_extra_replicas_delete_is_withdrawn_if_the_kept_replica_is_lost_first() -> None:
    """Replication lowered from 3 to 1: two holders are to delete; before they hear it, the holder that
    was kept is lost.  The map must not let them delete the last replicas: one keeps it (and counts
    again), the block is not missing."""
    for seed in range(20):
        block_map = cluster(4)
        block_map.rng.seed(seed)
        block = ref(1)
        write(block_map, block, 3, [1, 2, 3])
        block_map.set_replication([block.block_id], 1)
        assert block_map.commands(nid(4)) == NOTHING  # any node's report plans the trim
        (kept,) = block_map.locations(block.block_id)
        block_map.node_lost(kept.node_id)
        others = sorted({nid(1), nid(2), nid(3)} - {kept.node_id})
        deleted = [n for n in others if block.block_id in block_map.commands(n).delete]
        assert len(deleted) < 2, seed
        assert len(block_map.locations(block.block_id)) == 1
        assert block_map.missing() == []


def test_a_replica_reported_again_before_its_delete_does_not_count() -> None:
    """An extra replica the map has told its node to delete, reported again by that node (a full report
    on reconnection) before the order is heard, is not counted: counting it would make the block look
    over-replicated and have another holder trimmed too."""
    for seed in range(20):
        block_map = cluster(3)
        block_map.rng.seed(seed)
        block = ref(1)
        write(block_map, block, 2, [1, 2])
        block_map.set_replication([block.block_id], 1)
        assert block_map.commands(nid(3)) == NOTHING
        (kept,) = block_map.locations(block.block_id)
        trimmed = ({nid(1), nid(2)} - {kept.node_id}).pop()
        block_map.full_report(trimmed, [rep(block, 1_000)])
        assert block_map.commands(trimmed).delete == (block.block_id,)
        assert block_map.commands(kept.node_id).delete == (), seed
        assert block_map.locations(block.block_id) == [kept]


# ------------------------------------------------------------- missing blocks


def test_a_block_whose_holders_are_all_lost_is_missing_and_not_fetched() -> None:
    """Its only holder lost: listed by missing(), no fetch order (nothing to copy from), not counted
    under-replicated; reported again, it is found and replicated from that node."""
    block_map = cluster(3)
    block = ref(1)
    write(block_map, block, 2, [1])
    block_map.node_lost(nid(1))
    assert block_map.missing() == [block.block_id]
    assert block_map.under_replicated() == 0
    assert all(c == NOTHING for c in answers(block_map, [2, 3]).values())
    block_map.node_up(dn(1))
    block_map.full_report(nid(1), [rep(block, 1)])
    assert block_map.missing() == []
    orders = [o for c in answers(block_map, [1, 2, 3]).values() for o in c.fetch]
    assert [o.sources for o in orders] == [(dn(1),)]


def test_missing_lists_every_block_without_a_live_replica_sorted() -> None:
    """missing() is sorted; a block added without any replica yet is missing too."""
    block_map = cluster(1)
    block_map.add_blocks([ref(3), ref(1), ref(2)], 1)
    block_map.replica_written(nid(1), ref(2))
    assert block_map.missing() == [ref(1).block_id, ref(3).block_id]


# ------------------------------------------------------------- the replica arithmetic, as a table


@dataclass(frozen=True)
class Situation:
    """``holders`` of a block of ``replication`` on ``live`` live nodes, seen after one report from each."""

    replication: int
    live: int
    holders: int
    fetches: int  # orders given in one round of reports
    deletes: int  # orders given in one round of reports
    under_replicated: int
    missing: int


SITUATIONS = [
    Situation(replication=3, live=5, holders=3, fetches=0, deletes=0, under_replicated=0, missing=0),
    Situation(replication=3, live=5, holders=1, fetches=2, deletes=0, under_replicated=1, missing=0),
    Situation(replication=3, live=5, holders=2, fetches=1, deletes=0, under_replicated=1, missing=0),
    Situation(replication=3, live=5, holders=5, fetches=0, deletes=2, under_replicated=0, missing=0),
    Situation(replication=3, live=5, holders=0, fetches=0, deletes=0, under_replicated=0, missing=1),
    Situation(replication=3, live=2, holders=2, fetches=0, deletes=0, under_replicated=0, missing=0),
    Situation(replication=3, live=2, holders=1, fetches=1, deletes=0, under_replicated=1, missing=0),
    Situation(replication=1, live=1, holders=1, fetches=0, deletes=0, under_replicated=0, missing=0),
    Situation(replication=1, live=3, holders=3, fetches=0, deletes=2, under_replicated=0, missing=0),
    Situation(replication=10, live=4, holders=1, fetches=3, deletes=0, under_replicated=1, missing=0),
]


@pytest.mark.parametrize("s", SITUATIONS, ids=lambda s: f"r{s.replication}-live{s.live}-held{s.holders}")
def test_replica_arithmetic(s: Situation) -> None:
    """Wanted replicas are min(replication, live nodes): one round of reports orders the difference as
    fetches (one per node without the block) or trims the excess; under_replicated counts blocks with
    some but fewer than wanted live replicas, missing those with none."""
    block_map = cluster(s.live)
    block = ref(1)
    write(block_map, block, s.replication, list(range(1, s.holders + 1)))
    assert block_map.under_replicated() == s.under_replicated
    assert len(block_map.missing()) == s.missing
    commands = answers(block_map, list(range(1, s.live + 1)))
    assert len(fetch_targets(commands, block)) == s.fetches
    assert sum(len(c.delete) for c in commands.values()) == s.deletes
    assert all(i > s.holders for i in fetch_targets(commands, block))


# ------------------------------------------------------------- placement and queries


def test_choose_targets_puts_the_writers_node_first_then_distinct_random_live_nodes() -> None:
    """The writer's node leads the pipeline when live; the others are distinct live nodes; the count is
    capped by the live nodes; a writer that is not live is simply not in it."""
    block_map = cluster(5)
    block_map.node_up(dn(6))  # up, not live: never chosen
    seen: set[str] = set()
    for _ in range(30):
        targets = block_map.choose_targets(3, writer=nid(4))
        assert targets[0] == dn(4)
        assert len(ids(targets)) == 3 and ids(targets) <= {nid(i) for i in range(1, 6)}
        seen |= ids(targets[1:])
    assert seen == {nid(i) for i in (1, 2, 3, 5)}  # the rest are spread, not always the same
    assert len(block_map.choose_targets(9, writer="elsewhere:1")) == 5
    assert nid(6) not in ids(block_map.choose_targets(9, writer=nid(6)))
    assert block_map.choose_targets(1, writer=nid(2)) == [dn(2)]
    assert block_map.choose_targets(0, writer=nid(2)) == []


def test_nodes_without_room_for_a_block_are_left_out_of_new_pipelines_while_others_have_it() -> None:
    """A node whose last report left less room than the block size (its disk cap) is not chosen, not
    even as the writer's own node; when no node has room they are chosen anyway (the first refuses,
    naming its cap); a node never reported counts as roomy; a lost node's figure is forgotten."""
    block_map = cluster(3)
    block_map.free.update({nid(1): 10, nid(2): 5000})
    for _ in range(10):
        assert nid(1) not in ids(block_map.choose_targets(3, writer=nid(1), block_size=1000))
    assert ids(block_map.choose_targets(3, block_size=1000)) == {nid(2), nid(3)}
    block_map.free.update({nid(2): 10, nid(3): 10})
    assert len(block_map.choose_targets(3, block_size=1000)) == 3
    assert block_map.choose_targets(1, writer=nid(1), block_size=1000) == [dn(1)]
    block_map.node_lost(nid(1))
    assert nid(1) not in block_map.free


def test_choose_targets_with_no_live_node_is_not_enough_data_nodes() -> None:
    """No live node (none up, or up but not yet reported): NotEnoughDataNodes, a 503."""
    block_map = BlockMap(Clock(), random.Random(1))
    with pytest.raises(NotEnoughDataNodes) as raised:
        block_map.choose_targets(3)
    assert raised.value.http_status == 503
    block_map.node_up(dn(1))
    with pytest.raises(NotEnoughDataNodes):
        block_map.choose_targets(1, writer=nid(1))


def test_locations_are_the_live_valid_holders_in_varying_order() -> None:
    """locations() lists the live nodes with a valid replica (not corrupt, not lost), shuffled so reads
    spread; an unknown block has none."""
    block_map = cluster(4)
    block = ref(1)
    write(block_map, block, 4, [1, 2, 3, 4])
    block_map.incremental_report(nid(4), [rep(block, checksum="a" * 32)], [])
    block_map.node_lost(nid(3))
    orders = {tuple(n.node_id for n in block_map.locations(block.block_id)) for _ in range(30)}
    assert {frozenset(o) for o in orders} == {frozenset({nid(1), nid(2)})}
    assert len(orders) == 2
    assert block_map.locations(ref(2).block_id) == []


def test_holders_of_counts_a_nodes_valid_replicas() -> None:
    """holders_of is the number of valid replicas the map counts on a node (0 for an unknown node)."""
    block_map = cluster(2)
    for i in range(3):
        write(block_map, ref(i), 2, [1, 2] if i else [1])
    block_map.incremental_report(nid(2), [rep(ref(1), checksum="b" * 32)], [])
    assert (block_map.holders_of(nid(1)), block_map.holders_of(nid(2)), block_map.holders_of(nid(7))) == (3, 1, 0)


# ------------------------------------------------------------- property: a simulated cluster


@dataclass
class SimNode:
    """A simulated node: its disk (block id -> (length, checksum, finished at, in s)) and whether it runs."""

    disk: dict[str, tuple[int, str, float]] = field(default_factory=dict)
    up: bool = False

    def report(self, now: float) -> list[ReportedBlock]:
        return [ReportedBlock(b, length, checksum, int((now - at) * 1000)) for b, (length, checksum, at) in
                sorted(self.disk.items())]


class SimCluster:
    """Nodes that obey the map's orders at once and report what they did; the map's promises are
    checked on every answer."""

    def __init__(self, nodes: int, rng: random.Random) -> None:
        self.rng = rng
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.map = BlockMap(self.clock, random.Random(rng.random()), max_fetches_per_report=3)
        self.nodes = {nid(i): SimNode() for i in range(1, nodes + 1)}
        self.files: dict[str, tuple[BlockRef, int]] = {}  # block id -> (block, replication)
        self.next_block = 0

    # -- what the checks look at

    def live(self) -> set[str]:
        return {n for n, node in self.nodes.items() if node.up}

    def valid_copies(self, block: BlockRef) -> set[str]:
        """Live nodes whose disk holds a good copy of ``block``."""
        return {n for n in self.live() if self.nodes[n].disk.get(block.block_id, (0, "", 0.0))[:2] ==
                (block.length, block.checksum)}

    # -- events

    def node_up(self, node_id: str, wipe: bool) -> None:
        node = self.nodes[node_id]
        if wipe:
            node.disk.clear()
        node.up = True
        self.map.node_up(DataNode(node_id, node_id.replace("8041", "8042")))
        self.map.full_report(node_id, node.report(self.clock.seconds()))

    def node_lost(self, node_id: str) -> None:
        self.nodes[node_id].up = False
        self.map.node_lost(node_id)

    def write_file(self, blocks: int, replication: int, writer: str) -> None:
        if not self.live():
            return
        targets = [t.node_id for t in self.map.choose_targets(replication, writer=writer)]
        assert targets and all(t in self.live() for t in targets)
        refs = []
        for _ in range(blocks):
            self.next_block += 1
            refs.append(ref(self.next_block, 10 + self.next_block))
        now = self.clock.seconds()
        for block in refs:
            for t in targets:
                self.nodes[t].disk[block.block_id] = (block.length, block.checksum, now)
                if self.rng.random() < 0.3:  # finished and reported before the commit
                    self.map.incremental_report(t, [rep(block)], [])
        self.map.add_blocks(refs, replication)
        for block in refs:
            self.files[block.block_id] = (block, replication)
            for t in targets:
                self.map.replica_written(t, block)

    def remove_file(self) -> None:
        if self.files:
            block_id = self.rng.choice(sorted(self.files))
            del self.files[block_id]
            self.map.remove_blocks([block_id])

    def set_replication(self, replication: int) -> None:
        if self.files:
            block_id = self.rng.choice(sorted(self.files))
            block, _ = self.files[block_id]
            self.files[block_id] = (block, replication)
            self.map.set_replication([block_id], replication)

    def corrupt(self, node_id: str) -> None:
        node = self.nodes[node_id]
        if node.up and node.disk:
            block_id = self.rng.choice(sorted(node.disk))
            length, _, at = node.disk[block_id]
            node.disk[block_id] = (length, "c" * 32, at)
            self.map.incremental_report(node_id, [ReportedBlock(block_id, length, "c" * 32, 0)], [])

    def stray(self, node_id: str, age_ms: int) -> None:
        node = self.nodes[node_id]
        if node.up:
            self.next_block += 1
            stray = ref(10_000 + self.next_block)
            node.disk[stray.block_id] = (stray.length, stray.checksum, self.clock.seconds() - age_ms / 1000)
            self.map.incremental_report(node_id, [rep(stray, age_ms)], [])

    def report(self, node_id: str) -> None:
        """One report from ``node_id``: the answer is checked, then obeyed, and the changes reported."""
        node = self.nodes[node_id]
        if not node.up:
            return
        commands = self.map.commands(node_id)
        self.check(node_id, commands)
        for block_id in commands.delete:
            node.disk.pop(block_id, None)
        if commands.delete:
            self.map.incremental_report(node_id, [], list(commands.delete))
        now = self.clock.seconds()
        for order in commands.fetch:
            for source in order.sources:
                copy = self.nodes[source.node_id].disk.get(order.block_id)
                if copy is not None and copy[:2] == (order.length, order.checksum):
                    node.disk[order.block_id] = (order.length, order.checksum, now)
                    self.map.incremental_report(node_id, [ReportedBlock(order.block_id, *copy[:2], 0)], [])
                    break

    def round(self, seconds: float) -> None:
        self.clock.advance(seconds)
        for node_id in sorted(self.live()):
            self.report(node_id)

    # -- the promises

    def check(self, node_id: str, commands: NodeCommands) -> None:
        live = self.live()
        assert node_id in live
        for order in commands.fetch:
            block, _ = self.files[order.block_id]  # only blocks of files are fetched
            assert (order.length, order.checksum) == (block.length, block.checksum)
            assert node_id not in self.valid_copies(block), "told to fetch a block it already holds"
            assert order.block_id not in commands.delete, "told to delete and fetch the same block"
            assert order.sources, "a fetch order with nowhere to fetch from"
            for source in order.sources:
                assert source.node_id in live and source.node_id != node_id
                assert source.node_id in self.valid_copies(block), "a source without a good copy"
        assert len(commands.fetch) <= self.map.max_fetches_per_report
        for block_id in commands.delete:
            if block_id not in self.files:
                continue  # a removed file's or an orphan's replica
            block, _ = self.files[block_id]
            mine = self.nodes[node_id].disk.get(block_id)
            if mine is not None and mine[:2] == (block.length, block.checksum):
                assert self.valid_copies(block) - {node_id}, "a delete order that drops the last good replica"

    def check_settled(self) -> None:
        """After quiet rounds: the map agrees with the disks, and every block with a good copy has
        min(replication, live nodes) of them; no corrupt or unwanted replica remains."""
        live = self.live()
        missing = set(self.map.missing())
        for block_id, (block, replication) in self.files.items():
            holders = ids(self.map.locations(block_id))
            assert holders == self.valid_copies(block)
            assert (block_id in missing) == (not holders)
            if holders:
                assert len(holders) == min(replication, len(live)), (block_id, holders, replication, live)
        assert self.map.under_replicated() == 0
        for node_id in live:
            for block_id, (length, checksum, _) in self.nodes[node_id].disk.items():
                assert block_id in self.files, "a replica of no file survived its grace period"
                block, _ = self.files[block_id]
                assert (length, checksum) == (block.length, block.checksum), "a corrupt replica survived"


def settle(sim: SimCluster) -> None:
    """Report rounds, half a pending timeout apart, enough for the per-report cap on fetch orders: each
    round gives at least max_fetches_per_report orders while any are due, a block wants at most 4
    replicas; then one round after the orphan grace to let young orphans go."""
    rounds = 4 + -(-4 * len(sim.files) // sim.map.max_fetches_per_report)
    for _ in range(rounds):
        sim.round(TIMEOUT_S / 2)
    sim.round(GRACE_MS / 1000)
    sim.round(1)


def _run(seed: int, steps: int) -> SimCluster:
    rng = random.Random(seed)
    sim = SimCluster(rng.randint(1, 6), rng)
    names = sorted(sim.nodes)
    for _ in range(steps):
        node_id = rng.choice(names)
        event = rng.choices(
            ["up", "lost", "write", "remove", "replication", "corrupt", "stray", "report", "round", "time"],
            weights=[6, 3, 6, 2, 3, 1, 1, 12, 4, 2],
        )[0]
        if event == "up" and not sim.nodes[node_id].up:
            sim.node_up(node_id, wipe=rng.random() < 0.3)
        elif event == "lost" and sim.nodes[node_id].up:
            sim.node_lost(node_id)
        elif event == "write":
            sim.write_file(rng.randint(1, 3), rng.randint(1, 4), rng.choice([node_id, "elsewhere:1"]))
        elif event == "remove":
            sim.remove_file()
        elif event == "replication":
            sim.set_replication(rng.randint(1, 4))
        elif event == "corrupt":
            sim.corrupt(node_id)
        elif event == "stray":
            sim.stray(node_id, rng.choice([0, 100_000, GRACE_MS]))
        elif event == "report":
            sim.report(node_id)
        elif event == "round":
            sim.round(rng.choice([0, 1, 30]))
        else:
            sim.clock.advance(rng.choice([1, 60, TIMEOUT_S]))
    return sim


@pytest.mark.parametrize("seed", range(40))
def test_random_histories_keep_the_maps_promises_and_settle(seed: int) -> None:
    """Any seeded sequence of nodes up/lost (some wiped), writes (some reported before their commit),
    removals, replication changes, corrupt and stray replicas, single reports, rounds and time: no
    fetch targets a node that holds the block or is not live, sources are live good holders, no answer
    both deletes and fetches a block, no delete drops the last good replica; then, once events stop,
    every block with a good copy reaches min(replication, live) replicas within a bounded number of
    report rounds (half a pending timeout apart), and after the orphan grace no unwanted replica remains."""
    sim = _run(seed, steps=150)
    settle(sim)
    sim.check_settled()


def test_a_node_that_registers_again_is_no_write_target_until_its_next_full_report() -> None:
    """A restarted node learns the keys that check tickets from its full report's answer: until then no writer
    is sent to it."""
    block_map = cluster(2)
    block_map.node_registered(nid(1))
    assert block_map.live_nodes() == [dn(2)] and block_map.needs_full_report(nid(1))
    assert block_map.choose_targets(2) == [dn(2)]
    block_map.full_report(nid(1), [])
    assert block_map.live_nodes() == [dn(1), dn(2)]


# -- decommissioning (graceful leave) ----------------------------------------------------------


def test_a_decommissioning_nodes_replicas_do_not_count_and_are_copied_from_it_to_another_node() -> None:
    """HDFS's decommission: its replica does not count, another node is told to fetch the block (the
    leaving node among the sources, after the staying ones), and once it has, nothing is pending."""
    block_map = cluster(3)
    block = ref(1)
    write(block_map, block, 2, [1, 2])
    assert block_map.commands(nid(3)) == NOTHING
    block_map.node_decommissioning(nid(2))
    assert block_map.decommission_pending(nid(2)) == [block.block_id]  # one replica elsewhere; it wants two
    assert block_map.under_replicated() == 1
    (order,) = block_map.commands(nid(3)).fetch
    assert order.block_id == block.block_id and [s.node_id for s in order.sources] == [nid(1), nid(2)]
    assert block_map.commands(nid(2)).fetch == ()  # the leaving node fetches nothing
    block_map.incremental_report(nid(3), [rep(block)], [])
    assert block_map.under_replicated() == 0 and block_map.decommission_pending(nid(2)) == []
    assert block_map.commands(nid(2)).delete == ()  # its replica is not deleted: it goes with the node


def test_a_block_only_the_decommissioning_node_holds_is_pending_until_copied() -> None:
    block_map = cluster(2)
    block = ref(1)
    write(block_map, block, 1, [2])
    block_map.node_decommissioning(nid(2))
    assert block_map.decommission_pending(nid(2)) == [block.block_id]
    (order,) = block_map.commands(nid(1)).fetch
    assert [s.node_id for s in order.sources] == [nid(2)]  # the only source
    block_map.incremental_report(nid(1), [rep(block)], [])
    assert block_map.decommission_pending(nid(2)) == []
    assert [n.node_id for n in block_map.locations(block.block_id)] == [nid(1), nid(2)]  # the leaving one last


def test_a_decommissioning_node_is_no_write_target_and_its_blocks_stay_pending_with_no_other_node() -> None:
    block_map = cluster(2)
    block = ref(1)
    write(block_map, block, 2, [1, 2])
    block_map.node_decommissioning(nid(2))
    assert ids(block_map.choose_targets(3, writer=nid(2))) == {nid(1)}
    block_map.node_decommissioning(nid(1))
    assert block_map.decommission_pending(nid(1)) == [block.block_id]  # nowhere left to copy it: it must wait
    with pytest.raises(NotEnoughDataNodes):
        block_map.choose_targets(1)


def test_a_node_that_registers_again_after_decommissioning_counts_again() -> None:
    block_map = cluster(3)
    block = ref(1)
    write(block_map, block, 2, [1, 2])
    block_map.node_decommissioning(nid(2))
    assert block_map.under_replicated() == 1
    block_map.node_registered(nid(2))
    block_map.full_report(nid(2), [rep(block)])
    assert block_map.under_replicated() == 0

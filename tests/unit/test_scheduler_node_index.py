"""The free-space index of nodes: both resources checked, placement policies, exclusions, largest free."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from cortex_rm.allocator.node_index import FreeSpaceIndex, NodeDirectory, PlacementPolicy, SchedulerNode
from cortex_rm.yarn.ids import NodeId
from cortex_rm.yarn.resources import Resource

SPREAD, PACK = PlacementPolicy.SPREAD, PlacementPolicy.PACK


def _directory(*free: tuple[int, int]) -> tuple[NodeDirectory, list[SchedulerNode]]:
    d = NodeDirectory()
    nodes = [d.add(NodeId(f"h{i}", 1), "/r", Resource(m, v), "", None) for i, (m, v) in enumerate(free)]
    return d, nodes


def test_a_node_with_memory_but_no_cores_is_not_a_fit() -> None:
    """Both memory and vcores must fit: the memory-richest node with 0 cores free is passed over."""
    d, (no_cores, ok) = _directory((8192, 0), (2048, 2))
    assert d.everywhere.find(1024, 1, SPREAD) is ok
    assert d.everywhere.find(1024, 0, SPREAD) is no_cores
    assert d.everywhere.find(4096, 1, SPREAD) is None


def test_spread_takes_the_most_free_memory_and_pack_the_tightest_fit() -> None:
    """SPREAD prefers the emptiest node, PACK the smallest hole that fits."""
    d, (small, mid, big) = _directory((1024, 4), (3072, 4), (8192, 4))
    assert d.everywhere.find(2048, 1, SPREAD) is big
    assert d.everywhere.find(2048, 1, PACK) is mid
    assert d.everywhere.find(1024, 1, PACK) is small


def test_ties_are_broken_by_the_order_nodes_were_added() -> None:
    """Equal free space: SPREAD picks the first node added, PACK the last, every time."""
    d, (first, _, last) = _directory((4096, 4), (4096, 4), (4096, 4))
    assert d.everywhere.find(1024, 1, SPREAD) is first
    assert d.everywhere.find(1024, 1, PACK) is last


def test_excluded_nodes_are_skipped_in_preference_order() -> None:
    """With an exclusion, the next preferred node is returned; candidates() lists them all in order."""
    d, (a, b, c) = _directory((2048, 2), (8192, 8), (4096, 1))
    assert d.everywhere.find(1024, 1, SPREAD, exclude=lambda n: n is b) is c
    assert list(d.everywhere.candidates(1024, 1, SPREAD)) == [b, c, a]
    assert list(d.everywhere.candidates(1024, 1, PACK)) == [a, c, b]
    assert list(d.everywhere.candidates(1024, 2, PACK)) == [a, b]


def test_changing_free_space_moves_the_node_and_updates_totals() -> None:
    """change_free re-files the node in every index; removal forgets it and its capacity."""
    d, (a, b) = _directory((4096, 4), (2048, 2))
    d.change_free(a, -3072, -3)
    assert d.everywhere.find(2048, 1, SPREAD) is b
    assert d.used() == Resource(3072, 3) and d.total == Resource(6144, 6)
    assert d.everywhere.largest() is b
    d.remove(b)
    assert d.everywhere.find(1024, 1, SPREAD) is a and len(d.everywhere) == 1
    assert d.total == Resource(4096, 4) and "/r" in d.racks


@given(
    st.lists(st.tuples(st.integers(0, 16), st.integers(0, 8)), min_size=1, max_size=30),
    st.integers(0, 16),
    st.integers(0, 8),
    st.sampled_from([SPREAD, PACK]),
)
def test_find_agrees_with_a_linear_scan(free: list[tuple[int, int]], mem: int, vcores: int, policy: PlacementPolicy) -> None:
    """Whatever the free spaces, find() returns the node a brute-force scan would choose."""
    index = FreeSpaceIndex()
    nodes = []
    for i, (m, v) in enumerate(free):
        node = SchedulerNode(NodeId(f"h{i}", 1), "/r", Resource(m, v), True, i, None)
        index.add(node)
        nodes.append(node)
    fitting = [n for n in nodes if n.fits(mem, vcores)]
    if policy is SPREAD:
        expected = max(fitting, key=lambda n: (n.free_mem, -n.order), default=None)
    else:
        expected = min(fitting, key=lambda n: (n.free_mem, -n.order), default=None)
    assert index.find(mem, vcores, policy) is expected
    assert index.find(mem, vcores, policy, exclude=lambda n: False) is expected
    assert sorted(n.order for n in index.candidates(mem, vcores, policy)) == [n.order for n in fitting]


@given(
    st.lists(st.tuples(st.integers(0, 16), st.integers(0, 8), st.sampled_from(["static", "volatile", ""])),
             min_size=1, max_size=30),
    st.integers(0, 16),
    st.integers(0, 8),
    st.sampled_from([SPREAD, PACK]),
)
def test_find_outside_a_label_agrees_with_find_excluding_it(
    nodes: list[tuple[int, int, str]], mem: int, vcores: int, policy: PlacementPolicy
) -> None:
    """find_outside("static") picks what the whole cluster's find picks with static nodes excluded."""
    d = NodeDirectory()
    for i, (m, v, label) in enumerate(nodes):
        d.add(NodeId(f"h{i}", 1), "/r", Resource(m, v), label, None)
    expected = d.everywhere.find(mem, vcores, policy, exclude=lambda n: n.label == "static")
    assert d.find_outside("static", mem, vcores, policy) is expected


def test_a_resized_node_keeps_its_used_space_and_moves_in_every_index() -> None:
    """resize (a node's caps changed): free moves by the difference, totals and shapes follow; a cut
    below what is used leaves free negative and nothing fits there until containers end."""
    d, (a, b) = _directory((4096, 4), (2048, 2))
    d.change_free(a, -3072, -3)  # a container of 3 GB, 3 vcores on a
    assert d.resize(a.node_id, Resource(8192, 8))
    assert (a.free, a.used, d.total, d.used()) == (Resource(5120, 5), Resource(3072, 3), Resource(10240, 10), Resource(3072, 3))
    assert d.everywhere.find(4096, 4, SPREAD) is a and Resource(8192, 8) in d.shapes and Resource(4096, 4) not in d.shapes
    assert d.resize(a.node_id, Resource(2048, 2))
    assert a.free == Resource(-1024, -1) and a.used == Resource(3072, 3) and d.total == Resource(4096, 4)
    assert list(d.everywhere.candidates(1, 1, SPREAD)) == [b]
    assert not d.resize(a.node_id, Resource(2048, 2)) and not d.resize(NodeId("gone", 1), Resource(1, 1))
    d.change_free(a, 3072, 3)  # the container ended
    assert a.free == Resource(2048, 2) and d.everywhere.find(2048, 2, PACK) in (a, b)


def test_a_node_outside_its_schedule_is_withheld_from_placement_and_keeps_its_containers() -> None:
    """resize(offering=False): the node is in no free-space index (nothing is placed there, even as its
    containers end), its totals and shapes stay; offering again files it with what is free then."""
    d, (a, b) = _directory((4096, 4), (2048, 2))
    d.change_free(a, -1024, -1)
    assert d.resize(a.node_id, a.capability, offering=False)
    assert d.everywhere.find(1024, 1, SPREAD) is b and list(d.everywhere.candidates(1, 1, PACK)) == [b]
    d.change_free(a, 1024, 1)  # its container ended: still withheld
    assert list(d.everywhere.candidates(1, 1, SPREAD)) == [b] and d.total == Resource(6144, 6)
    assert not a.fits(1024, 1)  # (nor by host: a node-local ask finds it through fits)
    assert not d.resize(a.node_id, a.capability, offering=False)
    assert d.resize(a.node_id, a.capability, offering=True)
    assert d.everywhere.find(4096, 4, SPREAD) is a
    d.resize(a.node_id, a.capability, offering=False)
    d.remove(a)  # a withheld node can leave the scheduler too
    assert d.total == Resource(2048, 2)


def test_a_draining_node_leaves_its_partitions_shapes_and_its_later_changes_do_not_count_it_again() -> None:
    """drain: no longer in ``partition_shapes`` (an AM waiting for its partition does not wait for it),
    still in ``shapes`` (an ask only it could hold waits rather than being refused); a resize, a relabel
    or its removal afterwards keeps the counters right; its totals stay until it goes."""
    d, (a, b) = _directory((4096, 4), (2048, 2))
    assert d.drain(a.node_id) and d.drain(a.node_id)  # (again: nothing more happens)
    assert dict(d.partition_shapes) == {"": {Resource(2048, 2): 1}}
    assert dict(d.shapes) == {Resource(4096, 4): 1, Resource(2048, 2): 1} and d.total == Resource(6144, 6)
    d.resize(a.node_id, Resource(8192, 8))
    d.relabel(a, "static")
    assert dict(d.shapes) == {Resource(8192, 8): 1, Resource(2048, 2): 1} and "static" not in d.partition_shapes
    d.remove(a)
    assert dict(d.shapes) == {Resource(2048, 2): 1} and d.total == Resource(2048, 2)
    d.remove(b)
    assert not d.shapes and not d.partition_shapes

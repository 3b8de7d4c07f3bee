"""The Chord core in an in-memory network: joins, stabilization, lookups and crash repair."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cortex_rm.dht.chord import ChordNode
from cortex_rm.dht.chord_lookups import Action, JoinFailed, LookupDone
from cortex_rm.dht.chord_messages import FindSuccessor, FindSuccessorReply, GetNeighbours, NeighboursReply, Notify, Ping
from cortex_rm.dht.envelope import Send
from cortex_rm.dht.join_lifecycle import JOIN_LIFECYCLE, RingEvent, RingState
from cortex_rm.dht.peer import Peer
from cortex_rm.dht.ring_math import RING_SIZE
from cortex_rm.dht.routing_table import AskNext, Found
from cortex_rm.yarn.errors import IllegalTransition
from tests.support.chord_sim import ChordNetwork

N = 100


def only_send(actions: list[Action]) -> Send:
    """The one action of a step that must send exactly one message."""
    [action] = actions
    assert isinstance(action, Send)
    return action


def build_ring(seed: int, n: int = N) -> ChordNetwork:
    """A network of ``n`` nodes that all joined at once through the first one."""
    net = ChordNetwork(seed)
    first = net.add_node()
    for _ in range(n - 1):
        net.join(net.add_node(), first)
    net.deliver()
    return net


def lookup_keys(net: ChordNetwork, count: int) -> list[int]:
    """Keys worth checking: every node's id, the id just after it, and random keys."""
    keys = [node.node_id for node in net.live_nodes()]
    keys += [(node.node_id + 1) % RING_SIZE for node in net.live_nodes()]
    keys += [net.random.randrange(RING_SIZE) for _ in range(count)]
    return keys


@pytest.fixture(scope="module")
def converged_ring() -> ChordNetwork:
    """100 concurrently joined nodes, stabilized until the ring is correct, fingers refreshed."""
    net = build_ring(seed=4)
    net.stabilize_until_correct(max_rounds=300)
    net.refresh_fingers()
    return net


def test_concurrent_joins_of_100_nodes_converge_to_a_correct_ring() -> None:
    """After enough rounds every node's successor is the next id on the circle and its
    predecessor the previous one, and successor lists hold the next r nodes."""
    net = build_ring(seed=1)
    assert not net.ring_is_correct()  # all joined through one node: far from a ring yet
    net.stabilize_until_correct(max_rounds=300)
    for _ in range(8):  # each round carries the successor lists one entry further
        net.stabilization_round()
    ring = net.sorted_live()
    for i, node in enumerate(ring):
        expected = tuple(ring[(i + k) % len(ring)].me for k in range(1, 9))
        assert node.successor_list == expected


def test_every_lookup_from_every_node_returns_the_right_owner(converged_ring: ChordNetwork) -> None:
    """On a converged ring, lookups of node ids, ids + 1 and random keys from every node
    return the first node at or after the key."""
    net = converged_ring
    keys = lookup_keys(net, 10)
    for node in net.live_nodes():
        for key in keys[::7] + keys[-10:]:
            done = net.lookup(node, key)
            assert done.owner == net.true_owner(key), (node.me.address, hex(key))


def test_mean_lookup_hops_are_logarithmic(converged_ring: ChordNetwork) -> None:
    """With fingers in place, the mean number of hops is at most log2(N) (Chord: ~log2(N)/2)."""
    net = converged_ring
    rng = random.Random(7)
    hops = [net.lookup(node, rng.randrange(RING_SIZE)).hops for node in net.live_nodes() for _ in range(5)]
    mean = sum(hops) / len(hops)
    assert mean <= math.log2(N)
    assert max(hops) <= 2 * math.log2(N)


def test_after_half_the_nodes_crash_stabilization_repairs_the_ring_and_lookups() -> None:
    """50% of the nodes crash at once; stabilization repairs successors and predecessors,
    and lookups from every survivor return the right (live) owner again."""
    net = build_ring(seed=2)
    net.stabilize_until_correct(max_rounds=300)
    net.refresh_fingers()
    victims = net.random.sample(net.live_nodes(), N // 2)
    net.crash(victims)
    assert not net.ring_is_correct()
    net.stabilize_until_correct(max_rounds=60)
    net.refresh_fingers()
    keys = lookup_keys(net, 20)
    for node in net.live_nodes():
        for key in keys[::5]:
            done = net.lookup(node, key)
            assert done.owner == net.true_owner(key), (node.me.address, hex(key))


def test_a_single_joining_node_is_inserted_between_its_neighbours(converged_ring: ChordNetwork) -> None:
    """A node joining a converged ring becomes its predecessor's successor and its
    successor's predecessor, and then owns the keys up to its id."""
    net = converged_ring
    ring = net.sorted_live()
    a, b = ring[10], ring[11]
    newcomer = net.add_node(node_id=a.node_id + (b.node_id - a.node_id) // 2)
    net.join(newcomer, ring[50])
    net.deliver()
    assert newcomer.successor == b.me
    rounds = net.stabilize_until_correct(max_rounds=10)
    assert rounds <= 3
    assert a.successor == newcomer.me and b.predecessor == newcomer.me
    assert newcomer.predecessor == a.me
    assert net.lookup(ring[70], newcomer.node_id).owner == newcomer.me


def test_two_nodes_form_a_ring_from_one_join() -> None:
    """A node alone owns every key; after one join and a few rounds each is the other's
    successor and predecessor."""
    net = ChordNetwork(seed=3)
    a, b = net.add_node(100), net.add_node(200)
    assert a.find_successor(5) == Found(a.me)
    net.join(b, a)
    net.deliver()
    assert b.successor == a.me
    assert net.stabilize_until_correct(max_rounds=3) <= 3
    assert a.successor == b.me and b.successor == a.me


def test_find_successor_answers_it_is_or_ask() -> None:
    """A key in (n, successor] is answered locally; a farther one names the closest
    preceding finger to ask next."""
    node = ChordNode(100, "n")
    node.receive(Peer(200, "s"), Notify(), now=0.0)  # alone: the notifier becomes successor too
    assert node.successor == Peer(200, "s")
    assert node.find_successor(150) == Found(Peer(200, "s"))
    assert node.find_successor(200) == Found(Peer(200, "s"))
    assert node.find_successor(300) == AskNext(Peer(200, "s"))
    assert node.closest_preceding_node(300) == Peer(200, "s")
    assert node.closest_preceding_node(150) == node.me


def test_stabilize_adopts_a_predecessor_that_joined_in_between() -> None:
    """When the successor's predecessor lies between us and the successor, it becomes our
    successor, the list is that node followed by the old chain, and we notify it."""
    node = ChordNode(100, "n", successor_list_length=3)
    succ, newcomer = Peer(300, "s"), Peer(200, "x")
    node.receive(succ, Notify(), now=0.0)
    send = only_send(node.stabilize(now=0.0))
    assert isinstance(send.message, GetNeighbours) and send.to == succ
    reply = NeighboursReply(send.message.request_id, newcomer, (Peer(400, "t"), Peer(500, "u")))
    actions = node.receive(succ, reply, now=0.1)
    assert node.successor_list == (newcomer, succ, Peer(400, "t"))
    assert actions == [Send(newcomer, Notify())]


def test_a_dead_successor_is_replaced_by_the_next_in_the_list() -> None:
    """A stabilize request that expires drops the successor; the next entry takes over."""
    node = ChordNode(100, "n", request_timeout=1.0)
    succ = Peer(300, "s")
    node.receive(succ, Notify(), now=0.0)
    send = only_send(node.stabilize(now=0.0))
    assert isinstance(send.message, GetNeighbours)
    node.receive(succ, NeighboursReply(send.message.request_id, Peer(100, "n"), (Peer(400, "t"),)), now=0.1)
    assert node.successor_list == (succ, Peer(400, "t"))
    node.stabilize(now=1.0)
    assert node.expire(now=1.5) == []
    assert node.expire(now=2.5) == []
    assert node.successor == Peer(400, "t")


def test_a_reply_from_the_wrong_peer_or_too_late_is_ignored() -> None:
    """Replies are matched to a request by id and by the peer asked; others change nothing."""
    node = ChordNode(100, "n", request_timeout=1.0)
    succ = Peer(300, "s")
    node.receive(succ, Notify(), now=0.0)
    send = only_send(node.stabilize(now=0.0))
    assert isinstance(send.message, GetNeighbours)
    forged = NeighboursReply(send.message.request_id, Peer(150, "evil"), ())
    assert node.receive(Peer(150, "evil"), forged, now=0.1) == []
    assert node.successor == succ


def test_a_failed_join_is_reported() -> None:
    """A join whose introducer never answers ends with JoinFailed naming the introducer."""
    node = ChordNode(100, "n", request_timeout=1.0)
    introducer = Peer(500, "i")
    node.join(introducer, now=0.0)
    assert node.stabilize(now=0.5) == []  # joining: nothing to stabilize yet
    assert node.expire(now=2.0) == [JoinFailed(introducer)]
    assert not node.joining


def test_successor_list_length_must_be_positive() -> None:
    """r = 0 would leave no successor to fall back on; it is refused."""
    with pytest.raises(ValueError):
        ChordNode(1, "n", successor_list_length=0)


def test_a_node_whose_whole_successor_list_crashed_falls_back_on_its_fingers() -> None:
    """With r = 2, three consecutive nodes crash: the node before them has no live entry
    left, takes its nearest finger as successor, and stabilization walks back to the
    true successor."""
    net = ChordNetwork(seed=5, successor_list_length=2)
    first = net.add_node()
    for _ in range(29):
        net.join(net.add_node(), first)
    net.deliver()
    net.stabilize_until_correct(max_rounds=100)
    net.refresh_fingers()
    ring = net.sorted_live()
    survivor = ring[3]
    net.crash(ring[4:7])
    net.stabilize_until_correct(max_rounds=30)
    assert survivor.successor == ring[7].me
    net.refresh_fingers()
    for node in net.live_nodes():
        assert net.lookup(node, ring[5].node_id).owner == ring[7].me


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.one_of(st.integers(0, 50), st.integers(RING_SIZE - 50, RING_SIZE - 1)),
        min_size=1,
        max_size=12,
        unique=True,
    ),
    st.integers(1, 4),
    st.integers(0, 1000),
)
def test_small_rings_with_ids_around_zero_converge_and_route(node_ids: list[int], r: int, seed: int) -> None:
    """Any small set of ids (clustered around the wrap point), any r, any delivery order:
    concurrent joins converge and every node finds the owner of every id and id + 1."""
    net = ChordNetwork(seed=seed, successor_list_length=r)
    first = net.add_node(node_ids[0])
    for node_id in node_ids[1:]:
        net.join(net.add_node(node_id), first)
    net.deliver()
    net.stabilize_until_correct(max_rounds=3 * len(node_ids) + 5)
    for node in net.live_nodes():
        for key in node_ids + [(i + 1) % RING_SIZE for i in node_ids]:
            assert net.lookup(node, key).owner == net.true_owner(key)


def test_a_joining_node_sends_askers_to_its_introducer_and_fails_old_lookups() -> None:
    """While joining, a node knows nothing of the ring: a FindSuccessor is answered with
    "ask the introducer", and a lookup started before the join ends as failed."""
    node = ChordNode(100, "n", request_timeout=1.0)
    node.receive(Peer(300, "s"), Notify(), now=0.0)
    lookup_id, _ = node.lookup(400, now=0.0)
    introducer = Peer(500, "i")
    actions = node.join(introducer, now=0.5)
    assert LookupDone(lookup_id, 400, None, 1) in actions
    asker = Peer(700, "a")
    assert node.receive(asker, FindSuccessor(42, 600), now=0.6) == [
        Send(asker, FindSuccessorReply(42, introducer, False))
    ]


def test_a_ring_that_lost_messages_heals_once_the_loss_stops() -> None:
    """10% of messages are lost for 20 rounds (lost replies make live peers look dead);
    once the network is clean again stabilization makes the ring correct and it routes."""
    net = ChordNetwork(seed=6)
    first = net.add_node()
    for _ in range(39):
        net.join(net.add_node(), first)
    net.deliver()
    net.stabilize_until_correct(max_rounds=100)
    net.drop_rate = 0.1
    for _ in range(20):
        net.stabilization_round()
    assert net.messages_dropped > 0
    net.drop_rate = 0.0
    net.stabilize_until_correct(max_rounds=40)
    net.refresh_fingers()
    for node in net.live_nodes():
        for key in lookup_keys(net, 5)[::4]:
            assert net.lookup(node, key).owner == net.true_owner(key)


def test_the_simulation_replays_exactly_from_its_seed() -> None:
    """Two networks built from the same seed deliver the same messages and end in the same
    state, so a failing scenario can be replayed."""

    def run() -> tuple[int, list[tuple[Peer, Peer | None]]]:
        net = build_ring(seed=9, n=20)
        for _ in range(5):
            net.stabilization_round()
        return net.messages_delivered, [(n.successor, n.predecessor) for n in net.live_nodes()]

    assert run() == run()


def test_a_graceful_leave_closes_the_gap_before_any_stabilization(converged_ring: ChordNetwork) -> None:
    """The leaver's predecessor and successor are spliced together by its Leave messages
    alone: no timeout and no stabilization round is needed, and lookups route round it."""
    ring = converged_ring.sorted_live()
    leaver, before, after = ring[10], ring[9], ring[11]
    converged_ring.leave(leaver)
    assert leaver.state is RingState.LEFT
    assert before.successor == after.me
    assert after.predecessor == before.me
    assert len(before.successor_list) == before.successor_list_length
    assert leaver.receive(before.me, Ping(1), converged_ring.now) == []  # a left node answers nothing
    assert converged_ring.ring_is_correct()


def test_the_join_lifecycle_refuses_moves_it_does_not_declare() -> None:
    """Every legal move is in the table; an undeclared one (joined without joining)
    raises instead of passing silently, and ignorable ones change nothing."""
    assert JOIN_LIFECYCLE.next_state(RingState.ALONE, RingEvent.JOIN) is RingState.JOINING
    assert JOIN_LIFECYCLE.next_state(RingState.JOINING, RingEvent.JOINED) is RingState.MEMBER
    assert JOIN_LIFECYCLE.next_state(RingState.MEMBER, RingEvent.NOTIFIED) is None
    with pytest.raises(IllegalTransition):
        JOIN_LIFECYCLE.next_state(RingState.ALONE, RingEvent.JOINED)


def test_a_node_moves_alone_joining_member_and_back_to_alone_when_every_peer_is_gone() -> None:
    """The states follow the protocol: a fresh node is alone, a join makes it a member,
    and forgetting its only peer leaves it alone again (its own successor)."""
    net = ChordNetwork(seed=3)
    a, b = net.add_node(), net.add_node()
    assert a.state is RingState.ALONE
    net.join(b, a)
    assert b.state is RingState.JOINING
    net.deliver()
    assert b.state is RingState.MEMBER
    net.stabilize_until_correct(max_rounds=5)
    assert a.state is RingState.MEMBER
    b.forget(a.me)
    assert b.state is RingState.ALONE and b.successor == b.me

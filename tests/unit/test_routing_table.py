"""RoutingTable on its own: routing answers, successor-list rules, dropping and splicing peers."""

from __future__ import annotations

import pytest
from twisted.logger import LogEvent, globalLogPublisher

from cortex_rm.dht.peer import Peer
from cortex_rm.dht.ring_math import RING_SIZE, M, finger_start
from cortex_rm.dht.routing_table import AskNext, Found, RoutingTable

ME = Peer(100, "me")
A, B, C, D = Peer(200, "a"), Peer(300, "b"), Peer(400, "c"), Peer(500, "d")


def table(successors: list[Peer], predecessor: Peer | None = None, r: int = 3) -> RoutingTable:
    """A table for ``ME`` with the given successors and predecessor and no fingers."""
    routing = RoutingTable(ME, r)
    routing.install(successors, predecessor, [None] * M)
    return routing


def test_a_table_alone_is_its_own_successor_and_owns_every_key() -> None:
    """With no successors the node is its own successor and answers every key itself."""
    routing = RoutingTable(ME)
    assert routing.successor == ME and routing.successor_list == ()
    assert routing.lost_all
    assert routing.find_successor(5) == Found(ME)
    assert routing.find_successor(RING_SIZE - 1) == Found(ME)


def test_r_below_one_is_refused() -> None:
    """A table without room for one successor cannot route; it is refused."""
    with pytest.raises(ValueError):
        RoutingTable(ME, 0)


def test_closest_preceding_node_is_the_known_node_nearest_before_the_key() -> None:
    """Among fingers and successors, the node in (n, key) farthest from n is chosen;
    ``exclude`` is skipped; ourselves when none lies in between."""
    routing = table([A, B])
    routing.set_finger(M - 1, D)
    assert routing.closest_preceding_node(450) == B
    assert routing.closest_preceding_node(600) == D
    assert routing.closest_preceding_node(600, exclude=D) == B
    assert routing.closest_preceding_node(150) == ME


def test_find_successor_answers_found_in_the_successor_arc_and_ask_next_beyond() -> None:
    """A key in (n, successor] is Found there; a farther key names the closest preceding node."""
    routing = table([A, B])
    assert routing.find_successor(150) == Found(A)
    assert routing.find_successor(200) == Found(A)
    assert routing.find_successor(350) == AskNext(B)
    assert routing.find_successor(150, exclude=A) == Found(B)


def test_successor_list_from_a_chain_stops_at_r_at_ourselves_and_skips_repeats() -> None:
    """The chain gives at most r distinct entries and ends where it wraps back to us."""
    routing = RoutingTable(ME, 3)
    assert routing.successor_list_from([A, A, B, C, D]) == [A, B, C]
    assert routing.successor_list_from([A, ME, B]) == [A]


def test_set_successors_and_predecessor_log_one_event_per_change() -> None:
    """A change of successor or predecessor logs one event with node/old/new/reason; no change, no event."""
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)  # type: ignore[arg-type]
    try:
        routing = RoutingTable(ME)
        routing.set_successors([A], "joined")
        routing.set_successors([A, B], "stabilized")  # same successor: no event
        routing.set_predecessor(D, "notified")
    finally:
        globalLogPublisher.removeObserver(events.append)  # type: ignore[arg-type]
    ours = [e for e in events if e.get("node") == ME.short()]
    assert [e["log_format"] for e in ours] == [
        "ring {node} successor {old} -> {new} ({reason})",
        "ring {node} predecessor {old} -> {new} ({reason})",
    ]
    assert (ours[0]["old"], ours[0]["new"], ours[0]["reason"]) == (ME.short(), A.short(), "joined")
    assert (ours[1]["old"], ours[1]["new"], ours[1]["reason"]) == (None, D.short(), "notified")


def test_dropping_a_dead_peer_removes_it_everywhere_and_falls_back_on_the_nearest_known() -> None:
    """A dead peer leaves the list, the fingers and the predecessor; with the list empty
    the nearest other known node stands in as successor."""
    routing = table([A], predecessor=D)
    routing.set_finger(M - 1, C)
    routing.drop(A)
    assert routing.successor == C and routing.predecessor == D
    routing.drop(D)
    routing.drop(C)
    assert routing.successor == ME and routing.lost_all
    assert routing.fingers == (None,) * M


def test_splicing_a_leaver_out_puts_its_successors_in_its_place_and_inherits_its_predecessor() -> None:
    """A leaving successor is replaced by the successors it named; a leaving predecessor
    hands over its own predecessor."""
    routing = table([A, B], predecessor=D, r=3)
    routing.splice_out(A, ME, (B, C))
    assert routing.successor_list == (B, C)
    routing.splice_out(D, C, ())
    assert routing.predecessor == C


def test_a_considered_peer_is_taken_in_only_before_the_successor() -> None:
    """A peer between us and our successor becomes the successor; one beyond it does not."""
    routing = table([B])
    assert not routing.take_in(C) and routing.successor == B
    assert routing.take_in(A) and routing.successor_list == (A, B)
    assert not routing.admits(ME)


def test_next_finger_to_fix_sets_successor_fingers_and_returns_the_first_beyond() -> None:
    """Fingers whose start is in (n, successor] are set to the successor on the way;
    the first finger beyond it is returned with its start."""
    routing = table([A])
    i, start = routing.next_finger_to_fix() or (None, None)
    assert i == 7 and start == finger_start(ME.node_id, 7)  # 100 + 2**7 = 228 > 200
    assert routing.fingers[:7] == (A,) * 7


def test_install_sets_the_whole_state_for_oracles_and_checks_the_finger_count() -> None:
    """install takes successors, predecessor and M fingers (ourselves stored as None)."""
    routing = RoutingTable(ME, 2)
    routing.install([A, B, C], D, [ME] + [A] * (M - 1))
    assert routing.successor_list == (A, B) and routing.predecessor == D
    assert routing.fingers[0] is None and routing.fingers[1] == A
    with pytest.raises(ValueError):
        routing.install([A], None, [A])

"""The heads mirrors gossip: only heads signed by the RM's key are kept and passed on, and their slots
(one per publisher, bounded) can be neither filled for good by made-up publishers nor held by departed ones.

The mirror is the real core (``test_ledger_mirror.FakeRm`` gives it a signed log);
``Ring`` stands in for the ring service's two seams ``keep_ledger_heads`` uses
(registering a section, listening to membership).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from twisted.internet import task

from cortex_rm.accounting import ledger_mirror
from cortex_rm.accounting.ledger_mirror import LedgerMirror
from cortex_rm.accounting.tree_heads import SignedTreeHead, encode_tree_head
from cortex_rm.dht.member_table import MemberDied, MemberLeft, MembershipEvent
from cortex_rm.dht.peer import Peer
from cortex_rm.dht.ring_math import format_id
from cortex_rm.dht.swim_messages import GossipItem
from cortex_rm.roles import ledger_mirror as role
from cortex_rm.roles.ledger_mirror import LEDGER_STH_SECTION, LedgerHeads, keep_ledger_heads
from tests.unit.test_ledger_mirror import KEY, OTHER_KEY, FakeRm, mirror_of, run_round


class Ring:
    """The sections and membership listeners registered on a ring (what ``keep_ledger_heads`` needs)."""

    def __init__(self) -> None:
        self.sections: dict[str, Callable[[GossipItem], bool]] = {}
        self.listeners: list[Callable[[MembershipEvent], None]] = []

    def register_section(self, name: str, on_receive: Callable[[GossipItem], bool]) -> None:
        self.sections[name] = on_receive

    def add_membership_listener(self, listener: Callable[[MembershipEvent], None]) -> None:
        self.listeners.append(listener)

    def gossip(self, publisher: int, sth: SignedTreeHead) -> bool:
        item = GossipItem(LEDGER_STH_SECTION, format_id(publisher), encode_tree_head(sth), publisher=publisher)
        return self.sections[LEDGER_STH_SECTION](item)

    def announce(self, event: MembershipEvent) -> None:
        for listener in self.listeners:
            listener(event)


def synced_mirror() -> tuple[LedgerMirror, FakeRm]:
    clock = task.Clock()
    rm = FakeRm(clock=clock)
    rm.grow(5)
    mirror = mirror_of(clock)
    run_round(mirror, rm)
    return mirror, rm


def test_a_head_not_signed_by_the_rm_s_key_is_dropped_without_state() -> None:
    """Another key's head is neither kept nor passed on, by the node's heads or by its mirror."""
    mirror, rm = synced_mirror()
    ring = Ring()
    heads = keep_ledger_heads(ring)
    heads.attach(mirror)
    forged = rm.log.sign_tree_head(OTHER_KEY, 1)
    assert not ring.gossip(7, forged)
    assert not mirror.offer_peer_head(8, forged)
    assert heads.heads == {} and mirror.peer_heads == {} and heads.refused == 1
    assert ring.gossip(7, rm.log.sign_tree_head(KEY, 1))
    assert list(heads.heads) == [7] and list(mirror.peer_heads) == [7]


def test_attaching_a_mirror_drops_the_heads_its_rm_key_does_not_sign() -> None:
    """Heads kept before the mirror opened (unchecked) stay only if they verify with its key."""
    mirror, rm = synced_mirror()
    ring = Ring()
    heads = keep_ledger_heads(ring)
    assert ring.gossip(1, rm.log.sign_tree_head(OTHER_KEY, 1)) and ring.gossip(2, rm.log.sign_tree_head(KEY, 1))
    heads.attach(mirror)
    assert list(heads.heads) == [2] and list(mirror.peer_heads) == [2]


def test_made_up_publishers_cannot_lock_a_real_mirror_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """Copies of a real head under many publishers fill the slots; a new publisher still gets one (the least
    recently updated is evicted), in the node's heads and in the mirror."""
    monkeypatch.setattr(role, "MAX_PUBLISHERS", 8)
    monkeypatch.setattr(ledger_mirror, "MAX_PEER_HEADS", 8)
    mirror, rm = synced_mirror()
    ring = Ring()
    heads = keep_ledger_heads(ring)
    heads.attach(mirror)
    replayed = rm.log.sign_tree_head(KEY, 1)
    for sybil in range(100, 120):
        assert ring.gossip(sybil, replayed)
    assert len(heads.heads) == 8 and len(mirror.peer_heads) == 8
    assert ring.gossip(5, rm.log.sign_tree_head(KEY, 2))
    assert 5 in heads.heads and 5 in mirror.peer_heads and 112 not in heads.heads and 112 not in mirror.peer_heads


def test_a_publisher_that_died_or_left_frees_its_slot() -> None:
    """MemberDied and MemberLeft forget the publisher's head (in the node's heads and the mirror)."""
    mirror, rm = synced_mirror()
    ring = Ring()
    heads = keep_ledger_heads(ring)
    heads.attach(mirror)
    for publisher in (3, 4, 6):
        assert ring.gossip(publisher, rm.log.sign_tree_head(KEY, publisher))
    ring.announce(MemberDied(Peer(3, "127.0.0.1:1"), 1))
    ring.announce(MemberLeft(Peer(4, "127.0.0.1:2"), 1))
    assert list(heads.heads) == [6] and list(mirror.peer_heads) == [6]


def test_a_node_without_a_mirror_keeps_well_formed_heads_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no key to check against, heads are kept (and passed on), the least recently updated evicted."""
    monkeypatch.setattr(role, "MAX_PUBLISHERS", 4)
    _, rm = synced_mirror()
    heads = LedgerHeads()
    ring = Ring()
    ring.register_section(LEDGER_STH_SECTION, heads.receive)
    for publisher in range(1, 7):
        assert ring.gossip(publisher, rm.log.sign_tree_head(OTHER_KEY, publisher))
    assert list(heads.heads) == [3, 4, 5, 6]

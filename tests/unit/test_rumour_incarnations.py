"""Accusations at incarnations nobody can know: a lying member must not pin a live member's incarnation.

Real keys and signatures (``KeyTrust``), the sans-IO ``Membership`` core, and the
caller's clock as plain numbers.  Every lie here is signed by a live member, so
it passes the signature checks: only the incarnation rules stop it.
"""

from __future__ import annotations

import random

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cortex_rm.dht.envelope import Send
from cortex_rm.dht.member_table import ALIVE, DEAD, SUSPECT, MemberAlive, MemberJoined, MemberSuspected
from cortex_rm.dht.membership import Membership
from cortex_rm.dht.peer import Peer
from cortex_rm.dht.probe_evidence import DirectProbeAcked
from cortex_rm.dht.ring_trust import KeyTrust
from cortex_rm.dht.ring_work import solve_work
from cortex_rm.dht.swim_config import SwimConfig
from cortex_rm.dht.swim_messages import MAX_INCARNATION, Ack, MemberUpdate, Probe
from cortex_rm.internal.errors import MalformedEnvelope
from cortex_rm.internal.ring_codec import piggyback_size
from cortex_rm.internal.thrift_fields import MAX_COUNT

BITS = 8  # tests solve fast; the rule is the same at any width


class Node:
    """A key pair, its ring id, its solved work and its trust (signer and checker)."""

    def __init__(self, n: int) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.trust = KeyTrust(key, solve_work(spki, BITS), BITS, key_bits=0)  # no key puzzle: not what is tested
        self.peer = Peer(self.trust.node_id, f"10.0.1.{n}:7000")

    def alive(self, incarnation: int) -> MemberUpdate:
        """Our own ALIVE at ``incarnation``, signed."""
        return self.trust.sign_rumour(MemberUpdate(self.peer, ALIVE, incarnation))

    def accuse(self, subject: Peer, status: object, incarnation: int) -> MemberUpdate:
        """A SUSPECT or DEAD about ``subject``, signed by us as its accuser."""
        return self.trust.sign_rumour(MemberUpdate(subject, status, incarnation, self.peer))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def nodes() -> list[Node]:
    return [Node(i) for i in range(4)]


def membership(me: Node, others: list[Node], incarnation: int = 0) -> Membership:
    """A member at ``incarnation`` that heard every one of ``others`` announce itself ALIVE at 1."""
    m = Membership(me.peer, SwimConfig(), random.Random(1), incarnation=incarnation, trust=me.trust)
    for other in others:
        m.receive_piggyback(other.peer, [other.alive(1)], 0.0)
    m.set_neighbours([o.peer for o in others], 0.0)
    return m


def rows(m: Membership) -> list[tuple[Peer, object, int]]:
    return sorted((row.peer, row.status, row.incarnation) for row in m.members())


def test_the_highest_incarnation_is_the_codecs_and_one_above_it_cannot_be_sent(nodes: list[Node]) -> None:
    """MAX_INCARNATION is the wire's bound: an ALIVE at it encodes, one above it does not."""
    member = nodes[0]
    assert MAX_INCARNATION == MAX_COUNT
    assert piggyback_size(member.alive(MAX_INCARNATION)) > 0
    with pytest.raises(MalformedEnvelope):
        piggyback_size(member.alive(MAX_INCARNATION + 1))


def test_a_suspect_above_the_held_incarnation_of_a_live_member_is_refused_and_changes_nothing(nodes: list[Node]) -> None:
    """A live member's signed SUSPECT at 2**63 - 1 about a member we hold ALIVE at 1: refused and
    counted; no row, suspicion or gossip changes, and the member's ALIVE at 2 still wins."""
    me, victim, liar = nodes[0], nodes[1], nodes[2]
    m = membership(me, [victim, liar])
    before, queued = rows(m), m.broadcasts.queued()
    assert m.receive_piggyback(liar.peer, [liar.accuse(victim.peer, SUSPECT, MAX_INCARNATION)], 1.0) == []
    assert m.receive_piggyback(liar.peer, [liar.accuse(victim.peer, SUSPECT, 2)], 1.0) == []  # one above: the same
    assert rows(m) == before and m.broadcasts.queued() == queued and victim.peer.node_id not in m.view.suspicions
    assert m.view.refused == {"a suspect rumour above the incarnation we hold for its subject": 2}
    assert m.receive_piggyback(victim.peer, [victim.alive(2)], 2.0) == []  # ALIVE to ALIVE: no event
    assert m.status_of(victim.peer) is ALIVE and [r for r in rows(m) if r[0] == victim.peer] == [(victim.peer, ALIVE, 2)]


def test_a_suspicion_at_the_known_incarnation_is_believed_and_refuted_one_higher(nodes: list[Node]) -> None:
    """Legitimate SWIM is untouched: a SUSPECT at the incarnation we hold starts a suspicion; the
    suspect hears it, refutes at its incarnation + 1, and that ALIVE clears the suspicion."""
    me, suspect, accuser = nodes[0], nodes[1], nodes[2]
    m = membership(me, [suspect, accuser])
    accusation = accuser.accuse(suspect.peer, SUSPECT, 1)
    assert m.receive_piggyback(accuser.peer, [accusation], 1.0) == [MemberSuspected(suspect.peer, 1)]
    assert not m.view.refused
    # The suspect itself (at incarnation 1) hears the accusation.
    s = membership(suspect, [me, accuser], incarnation=1)
    actions = s.receive_piggyback(accuser.peer, [accusation], 1.0)
    assert s.incarnation == 2 and not s.view.refused
    assert [a.to for a in actions if isinstance(a, Send) and isinstance(a.message, Probe)] == [accuser.peer]
    [refutation] = [u for u in s.broadcasts.queued() if isinstance(u, MemberUpdate) and u.peer == suspect.peer]
    assert (refutation.status, refutation.incarnation) == (ALIVE, 2) and me.trust.rumour_error(refutation) is None
    assert m.receive_piggyback(suspect.peer, [refutation], 1.5) == [MemberAlive(suspect.peer, 2)]


def test_a_lie_about_us_above_our_incarnation_is_refused_and_refuted_one_above_ours(nodes: list[Node]) -> None:
    """A signed SUSPECT or DEAD about us at 2**63 - 1 (we are at 5): refused and counted, our
    incarnation becomes 6 (not 2**63), our ALIVE can be encoded, and the accuser is told."""
    me, liar = nodes[0], nodes[1]
    m = membership(me, [liar], incarnation=5)
    actions = m.receive_piggyback(liar.peer, [liar.accuse(me.peer, SUSPECT, MAX_INCARNATION)], 1.0)
    assert m.incarnation == 6 and sum(m.view.refused.values()) == 1
    assert [a.to for a in actions if isinstance(a, Send) and isinstance(a.message, Probe)] == [liar.peer]
    own = m.view.own_alive()
    assert own.incarnation == 6 and own in m.broadcasts.queued() and piggyback_size(own) > 0
    m.receive_piggyback(liar.peer, [liar.accuse(me.peer, DEAD, MAX_INCARNATION)], 2.0)
    assert m.incarnation == 7 and sum(m.view.refused.values()) == 2


def test_a_refutation_never_goes_past_the_highest_incarnation(nodes: list[Node]) -> None:
    """At 2**63 - 2 a refutation reaches 2**63 - 1; at 2**63 - 1 it stays there: always encodable."""
    me, accuser = nodes[0], nodes[1]
    m = membership(me, [accuser], incarnation=MAX_INCARNATION - 1)
    m.receive_piggyback(accuser.peer, [accuser.accuse(me.peer, SUSPECT, MAX_INCARNATION - 1)], 1.0)
    assert m.incarnation == MAX_INCARNATION and not m.view.refused
    m.receive_piggyback(accuser.peer, [accuser.accuse(me.peer, SUSPECT, MAX_INCARNATION)], 2.0)
    assert m.incarnation == MAX_INCARNATION and piggyback_size(m.view.own_alive()) > 0


@pytest.mark.parametrize("status", [SUSPECT, DEAD])
def test_an_accusation_about_an_unknown_member_makes_no_row_and_its_own_alive_still_does(
    nodes: list[Node], status: object
) -> None:
    """A signed SUSPECT or DEAD at 2**63 - 1 about an id we never heard of: no row; when the real
    member announces itself ALIVE at 1, it joins ALIVE at 1."""
    me, accuser, stranger = nodes[0], nodes[1], nodes[3]
    m = membership(me, [accuser])
    assert m.receive_piggyback(accuser.peer, [accuser.accuse(stranger.peer, status, MAX_INCARNATION)], 1.0) == []
    assert m.status_of(stranger.peer) is None and len(m.members()) == 1
    assert m.receive_piggyback(stranger.peer, [stranger.alive(1)], 2.0) == [MemberJoined(stranger.peer, 1)]


def test_a_dead_above_the_held_incarnation_is_only_a_claim_our_probe_refutes(nodes: list[Node]) -> None:
    """A signed DEAD at 2**63 - 1 about a member we hold ALIVE at 1 changes no row: our probe checks
    it, the member answers, and it stays ALIVE at 1."""
    me, victim, liar = nodes[0], nodes[1], nodes[2]
    m = membership(me, [victim, liar])
    before = rows(m)
    actions = m.receive_piggyback(liar.peer, [liar.accuse(victim.peer, DEAD, MAX_INCARNATION)], 1.0)
    [check] = [a for a in actions if isinstance(a, Send)]
    assert isinstance(check, Send) and check.to == victim.peer and isinstance(check.message, Probe)
    assert rows(m) == before
    assert m.receive(victim.peer, Ack(check.message.seq), 1.1) == [DirectProbeAcked(victim.peer)]  # (its own answer)
    assert m.claims.refuted == 1 and rows(m) == before

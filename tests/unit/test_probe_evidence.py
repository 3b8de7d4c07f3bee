"""The evidence membership reports for the uptime witness: our direct probes and the targets' own acks, nothing else.

A ``Membership`` core driven step by step on a fake clock (as ``test_membership.py``
does); each test says which probe or ack is (or is not) evidence.
"""

from __future__ import annotations

import random

from cortex_rm.dht.envelope import Send
from cortex_rm.dht.membership import Membership, SwimAction
from cortex_rm.dht.peer import Peer
from cortex_rm.dht.probe_evidence import DirectProbeAcked, DirectProbeSent, ProbeEvidence
from cortex_rm.dht.swim_config import SwimConfig
from cortex_rm.dht.swim_messages import Ack, MemberStatus, MemberUpdate, Nack, Probe, ProbeRequest

ME = Peer(100, "me:1")
T, H1, H2, H3 = Peer(1, "t:1"), Peer(2, "h1:1"), Peer(3, "h2:1"), Peer(4, "h3:1")


def evidence(actions: list[SwimAction]) -> list[ProbeEvidence]:
    return [a for a in actions if isinstance(a, (DirectProbeSent, DirectProbeAcked))]


def member(neighbours: list[Peer] | None = None) -> Membership:
    """A core that knows T and three helpers (ALIVE) and probes ``neighbours`` (default: T only)."""
    m = Membership(ME, SwimConfig(), random.Random(1))
    for peer in (T, H1, H2, H3):
        m.heard_from(peer, 0.0)
    m.set_neighbours(neighbours if neighbours is not None else [T], 0.0)
    return m


def start_probe(m: Membership) -> tuple[float, int, list[SwimAction]]:
    """Tick until the core probes: the time, the probe's seq and the tick's actions."""
    for _ in range(10):
        now = m.next_deadline()
        actions = m.tick(now)
        probes = [a for a in actions if isinstance(a, Send) and isinstance(a.message, Probe)]
        if probes:
            return now, probes[0].message.seq, actions  # type: ignore[union-attr]
    raise AssertionError("no probe started")


def test_a_probe_round_reports_its_probe_and_the_targets_first_ack_only() -> None:
    """The round's probe is a DirectProbeSent; the target's ack a DirectProbeAcked, once however often it repeats."""
    m = member()
    now, seq, actions = start_probe(m)
    assert evidence(actions) == [DirectProbeSent(T)]
    assert evidence(m.receive(T, Ack(seq), now + 0.1)) == [DirectProbeAcked(T)]
    for _ in range(100):
        assert m.receive(T, Ack(seq), now + 0.2) == []  # duplicates
    assert m.receive(T, Ack(seq + 1), now + 0.2) == m.receive(T, Ack(seq - 1), now + 0.2) == []  # other seqs


def test_acks_nobody_asked_for_are_no_evidence() -> None:
    """Before any probe, an ack from a member (of any seq) reports nothing; neither does one after the period."""
    m = member()
    assert [a for seq in range(50) for a in m.receive(T, Ack(seq), 0.0)] == []
    now, seq, _ = start_probe(m)
    m.tick(now + 1.0)  # the period ended unanswered
    assert evidence(m.receive(T, Ack(seq), now + 1.01)) == []


def test_a_helpers_relayed_ack_is_no_evidence_but_the_targets_own_later_ack_is() -> None:
    """Indirect probing: a helper's Ack of our seq keeps the target alive but is not the target's answer;
    a Nack is nothing; the target's own ack arriving later in the period still is."""
    m = member()
    now, seq, _ = start_probe(m)
    requests = m.tick(now + 0.5)
    assert evidence(requests) == [] and {s.to for s in requests if isinstance(s, Send)} == {H1, H2, H3}
    assert m.receive(H1, Ack(seq), now + 0.6) == []
    assert m.receive(H2, Nack(seq), now + 0.6) == []
    assert m.probe_in_flight is None  # acked (by the helper): the target lives
    assert evidence(m.receive(T, Ack(seq), now + 0.7)) == [DirectProbeAcked(T)]
    m.tick(now + 1.0)
    assert m.status_of(T) is MemberStatus.ALIVE


def test_probes_we_relay_for_others_are_no_evidence() -> None:
    """A ProbeRequest makes us probe T for H1: neither that probe nor T's ack (forwarded to H1) is ours."""
    m = member()
    [probe] = m.receive(H1, ProbeRequest(41, T), 10.0)
    assert isinstance(probe, Send) and isinstance(probe.message, Probe)
    assert m.receive(T, Ack(probe.message.seq), 10.1) == [Send(H1, Ack(41))]


def test_a_death_claims_direct_probe_and_the_members_answer_are_evidence_a_helpers_answer_is_not() -> None:
    """A DEAD claim is checked by a direct probe (evidence) and the claimed member's ack refutes it (evidence);
    a second claim answered only through a helper yields no DirectProbeAcked."""
    m = member(neighbours=[T, H3])
    actions = m.receive_piggyback(H1, [MemberUpdate(T, MemberStatus.DEAD, 0)], 1.0)
    [check] = [a for a in actions if isinstance(a, Send)]
    assert evidence(actions) == [DirectProbeSent(T)]
    assert evidence(m.receive(T, Ack(check.message.seq), 1.1)) == [DirectProbeAcked(T)]  # type: ignore[union-attr]
    assert m.claims.refuted == 1
    actions = m.receive_piggyback(H1, [MemberUpdate(H3, MemberStatus.DEAD, 0)], 2.0)
    [check] = [a for a in actions if isinstance(a, Send)]
    helpers = [s.to for s in m.tick(2.5) if isinstance(s, Send) and isinstance(s.message, ProbeRequest)]
    assert helpers
    assert m.receive(helpers[0], Ack(check.message.seq), 2.6) == []  # type: ignore[union-attr]
    assert m.claims.refuted == 2


def test_leave_and_pushed_accusations_are_untracked_probes_not_evidence() -> None:
    """The goodbyes of a leave, and the pushes of an accusation to k members, report no DirectProbeSent."""
    m = member(neighbours=[T, H1])
    now, seq, _ = start_probe(m)
    failed = m.tick(now + 0.5) + m.tick(now + 1.0)  # unanswered: suspected, the accusation pushed, the next round
    probes = [s.to for s in failed if isinstance(s, Send) and isinstance(s.message, Probe)]
    assert len(probes) == 1 + 3 and m.probe_in_flight is not None
    assert evidence(failed) == [DirectProbeSent(m.probe_in_flight)]  # the next round's probe only
    goodbyes = m.leave(now + 1.5)
    assert {s.to for s in goodbyes if isinstance(s, Send)} == {T, H1} and evidence(goodbyes) == []


def test_our_own_alive_rides_on_our_first_message_to_each_peer_at_each_incarnation() -> None:
    """After a restart or a refutation, whoever we answer first learns our incarnation from that answer (its
    uptime witness must not bridge a restart); later messages to it, and messages after a leave, do not carry it."""
    m = member()
    introduction = MemberUpdate(ME, MemberStatus.ALIVE, 0)
    assert introduction in m.piggyback_for(T, 1000, size_of)
    drain(m)  # only the introduction could carry our ALIVE now
    assert introduction not in m.piggyback_for(T, 1000, size_of)
    assert introduction in m.piggyback_for(H1, 1000, size_of)
    assert introduction not in m.piggyback_for(H2, 10, size_of)  # no room: H2 is introduced next time
    m.receive_piggyback(H1, [MemberUpdate(ME, MemberStatus.SUSPECT, 0, H1)], 1.0)  # refuted: incarnation 1
    drain(m)
    assert MemberUpdate(ME, MemberStatus.ALIVE, 1) in m.piggyback_for(T, 1000, size_of)
    m.leave(2.0)
    items = m.piggyback_for(H2, 1000, size_of)
    assert not [i for i in items if isinstance(i, MemberUpdate) and i.status is MemberStatus.ALIVE]


def size_of(item: object) -> int:
    return 100


def drain(m: Membership) -> None:
    """Send everything queued for gossip until it reached its retransmission limit."""
    while m.broadcasts.take(10**6, size_of):
        pass

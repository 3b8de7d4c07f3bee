"""A ring outsiders cannot steer: signed rumours and records, DEAD claims checked by our own
probe, write policies, proof of work and per-peer rate limits -- sans-IO, real keys, a fake clock."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from cortex_rm.dht.envelope import Envelope, Send
from cortex_rm.dht.key_space import KeySpace
from cortex_rm.dht.kv_messages import PutRecord, PutReply, Record, StoreReplicas
from cortex_rm.dht.member_table import ALIVE, DEAD, LEFT, SUSPECT, MemberDied
from cortex_rm.dht.membership import Membership
from cortex_rm.dht.peer import Peer
from cortex_rm.dht.rate_limits import PeerRateLimit
from cortex_rm.dht.refusals import Refusals
from cortex_rm.dht.ring_config import RingConfig
from cortex_rm.dht.ring_member import RingMember, Transmit
from cortex_rm.dht.ring_trust import KeyTrust, key_id
from cortex_rm.dht.ring_work import leading_zero_bits, solve_work, work_digest, work_ok
from cortex_rm.dht.swim_config import SwimConfig
from cortex_rm.dht.swim_messages import Ack, GossipItem, MemberUpdate, Probe, ProbeRequest
from cortex_rm.dht.write_policy import WritePolicy, node_key
from cortex_rm.internal.identity import ring_key
from cortex_rm.internal.ring_codec import piggyback_size

BITS = 8  # tests solve fast; the rule is the same at any width
KEY_BITS = 4  # the key puzzle's (test_ring_key_puzzle.py checks it)


class Node:
    """A key pair (solving the key puzzle), its ring id, its solved work and its trust (signer and checker)."""

    def __init__(self, n: int) -> None:
        self.key = ring_key(KEY_BITS)
        self.work = solve_work(_spki(self.key), BITS)
        self.trust = KeyTrust(self.key, self.work, BITS, KEY_BITS)
        self.peer = Peer(self.trust.node_id, f"10.0.0.{n}:7000")


def _spki(key: ec.EllipticCurvePrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture(scope="module")
def nodes() -> list[Node]:
    return [Node(i) for i in range(6)]


def membership(me: Node, others: list[Node], now: float = 0.0) -> Membership:
    """A member that heard every one of ``others`` announce itself (signed ALIVE) and probes them."""
    m = Membership(me.peer, SwimConfig(), random.Random(1), trust=me.trust)
    for other in others:
        alive = other.trust.sign_rumour(MemberUpdate(other.peer, ALIVE, 1))
        m.receive_piggyback(other.peer, [alive], now)
    m.set_neighbours([o.peer for o in others], now)
    return m


def tick_until(m: Membership, end: float) -> list[object]:
    """Tick at every deadline up to ``end`` and at ``end`` (as a reactor would); all actions."""
    actions: list[object] = []
    while m.next_deadline() < end:
        actions += m.tick(m.next_deadline())
    return actions + m.tick(end)


# ------------------------------------------------------------------ proof of work


def test_work_is_solved_and_checked_and_a_wrong_nonce_fails() -> None:
    """solve_work finds a nonce with the bits asked for; work_ok accepts it and refuses others."""
    spki = b"some key"
    nonce = solve_work(spki, 12)
    assert leading_zero_bits(work_digest(spki, nonce)) >= 12 and work_ok(spki, nonce, 12)
    assert not work_ok(b"another key", nonce, 20) or work_ok(b"another key", nonce, 20) == (
        leading_zero_bits(work_digest(b"another key", nonce)) >= 20
    )
    assert not work_ok(spki, -1, 0) and not work_ok(spki, 2**64, 0)
    assert not all(work_ok(spki, n, 12) for n in range(nonce))  # earlier nonces fail (the first solution)


def test_an_envelope_from_a_key_without_work_is_dropped_whole(nodes: list[Node]) -> None:
    """A sender whose key has no valid work is never heard from: no member entry, no reply, counted."""
    me, outsider = nodes[0], nodes[1]
    member = RingMember(me.peer, RingConfig(work_bits=BITS), random.Random(1), piggyback_size=piggyback_size, trust=me.trust)
    member.start(0.0)
    lazy = Envelope(outsider.peer, Probe(1), (), work=outsider.work + 1, sender_key=outsider.trust.spki)
    if work_ok(outsider.trust.spki, outsider.work + 1, BITS):  # astronomically unlikely; keep the test honest
        pytest.skip("the next nonce happens to solve the puzzle too")
    assert member.receive(lazy, 1.0) == []
    assert member.membership.status_of(outsider.peer) is None and sum(member.refused.values()) == 1
    honest = replace(lazy, work=outsider.work)
    [reply] = [a for a in member.receive(honest, 1.0) if isinstance(a, Transmit)]
    assert reply.envelope.body == Ack(1) and reply.envelope.work == me.work
    assert member.membership.status_of(outsider.peer) is ALIVE


# ------------------------------------------------------------------ signed rumours


def test_rumours_signed_by_someone_who_may_not_say_them_are_refused(nodes: list[Node]) -> None:
    """ALIVE/LEFT not signed by the member, SUSPECT by a non-member accuser, a bad signature: dropped and counted."""
    me, a, b, outsider = nodes[0], nodes[1], nodes[2], nodes[3]
    m = membership(me, [a, b])
    before = m.members()
    forged_left = b.trust.sign_rumour(MemberUpdate(b.peer, SUSPECT, 1, b.peer))  # b signs, claims LEFT of a
    forged_left = replace(forged_left, peer=a.peer, status=LEFT)
    outsider_suspect = outsider.trust.sign_rumour(MemberUpdate(a.peer, SUSPECT, 1, outsider.peer))
    tampered = replace(a.trust.sign_rumour(MemberUpdate(a.peer, ALIVE, 5)), incarnation=6)
    unsigned = MemberUpdate(a.peer, SUSPECT, 1, b.peer)
    for rumour in (forged_left, outsider_suspect, tampered, unsigned):
        assert m.receive_piggyback(b.peer, [rumour], 1.0) == []
    assert m.members() == before and sum(m.view.refused.values()) == 4
    honest = b.trust.sign_rumour(MemberUpdate(a.peer, SUSPECT, 1, b.peer))
    assert m.receive_piggyback(b.peer, [honest], 1.0) != [] and m.status_of(a.peer) is SUSPECT


def test_a_forged_dead_about_a_live_member_changes_no_routing_state(nodes: list[Node]) -> None:
    """A DEAD about a live member -- from an outsider, or signed by a member that lies -- leaves
    the member table, successors, predecessor and fingers as they were: our own probe is answered."""
    me, live, liar, outsider = nodes[0], nodes[1], nodes[2], nodes[3]
    config = RingConfig(work_bits=BITS)
    member = RingMember(me.peer, config, random.Random(1), piggyback_size=piggyback_size, trust=me.trust)
    member.start(0.0)
    for other in (live, liar):
        alive = other.trust.sign_rumour(MemberUpdate(other.peer, ALIVE, 1))
        member.receive(Envelope(other.peer, Ack(999), (alive,), other.work, other.trust.spki), 0.0)
    member.chord.consider(live.peer)
    member.tick(0.5)
    routing = (member.chord.predecessor, member.chord.successor_list, member.chord.fingers)
    table = sorted((m.peer, m.status, m.incarnation) for m in member.membership.members())

    # A self-signed outsider: straight to us without work (dropped whole), or relayed by a member
    # (signed by an accuser that is no member of ours: refused).  Then a member that lies.
    from_outsider = outsider.trust.sign_rumour(MemberUpdate(live.peer, DEAD, 1, outsider.peer))
    assert member.receive(Envelope(outsider.peer, Ack(998), (from_outsider,), 0, outsider.trust.spki), 1.0) == []
    actions = member.receive(Envelope(liar.peer, Ack(996), (from_outsider,), liar.work, liar.trust.spki), 1.0)
    assert sum(member.membership.view.refused.values()) == 1 and member.membership.status_of(outsider.peer) is None
    lie = liar.trust.sign_rumour(MemberUpdate(live.peer, DEAD, 1, liar.peer))
    actions += member.receive(Envelope(liar.peer, Ack(997), (lie,), liar.work, liar.trust.spki), 1.0)
    [check] = [a for a in actions if isinstance(a, Transmit) and a.to == live.peer and isinstance(a.envelope.body, Probe)]
    # The live member answers our check.
    ack = Envelope(live.peer, Ack(check.envelope.body.seq), (), live.work, live.trust.spki)  # type: ignore[union-attr]
    member.receive(ack, 1.1)
    events: list[object] = []
    now = 1.1
    while now < 2.5:  # past the check's end (1.0 + a probe period); the live member answers every probe
        now = member.next_deadline(now) + 1e-6
        for action in member.tick(now):
            events.append(action)
            if isinstance(action, Transmit) and action.to == live.peer and isinstance(action.envelope.body, Probe):
                answer = Envelope(live.peer, Ack(action.envelope.body.seq), (), live.work, live.trust.spki)
                events += member.receive(answer, now)
    assert not [e for e in events if isinstance(e, MemberDied)]
    assert (member.chord.predecessor, member.chord.successor_list, member.chord.fingers) == routing
    after = sorted((m.peer, m.status, m.incarnation) for m in member.membership.members())
    # Our own probes of unanswering members may suspect them; the live one stays ALIVE.
    assert dict((p, s) for p, s, _ in after)[live.peer] is ALIVE
    assert [row for row in after if row[0] == live.peer] == [row for row in table if row[0] == live.peer]
    assert member.membership.claims.refuted == 1
    # what /ws/v1/ring and `cortex-rm ring` show: the workless envelope, the outsider's rumour, the refuted claim
    assert member.view().refusals == Refusals(senders=1, rumours=1, refuted_deaths=1)


def test_a_dead_claim_is_acted_on_when_our_own_probe_fails_too(nodes: list[Node]) -> None:
    """A member's signed DEAD about a member that answers nobody: our direct and indirect probes fail,
    then we declare it DEAD ourselves (signed by us) and gossip that."""
    me, gone, accuser, helper = nodes[0], nodes[1], nodes[2], nodes[4]
    m = membership(me, [gone, accuser, helper])
    death = accuser.trust.sign_rumour(MemberUpdate(gone.peer, DEAD, 1, accuser.peer))
    [probe] = [a for a in m.receive_piggyback(accuser.peer, [death], 1.0) if isinstance(a, Send)]
    assert probe == Send(gone.peer, Probe(probe.message.seq)) and m.status_of(gone.peer) is ALIVE  # type: ignore[union-attr]
    timeout = SwimConfig().probe_timeout
    indirect = [a for a in m.tick(1.0 + timeout) if isinstance(a, Send) and isinstance(a.message, ProbeRequest)]
    assert indirect and all(a.message.target == gone.peer for a in indirect)  # type: ignore[union-attr]
    events = tick_until(m, 1.0 + SwimConfig().probe_interval)
    assert MemberDied(gone.peer, 1) in events and m.status_of(gone.peer) is DEAD
    [ours] = [u for u in m.broadcasts.queued() if isinstance(u, MemberUpdate) and u.status is DEAD]
    assert ours.accuser == me.peer and me.trust.rumour_error(ours) is None


# ------------------------------------------------------------------ signed records and write policies


def keyspace(node: Node, policy: WritePolicy) -> KeySpace:
    ks = KeySpace(node.peer, replicas=1, request_timeout=1.0, trust=node.trust, policy=policy)
    ks.set_ring(None, (), 0.0)  # alone: owns every key
    return ks


def test_a_record_by_a_writer_that_may_not_write_the_key_is_refused_on_put_and_on_sync(nodes: list[Node]) -> None:
    """The RM's key only by a configured RM; a member key only by its member; a tampered or
    mis-attributed record by nobody -- refused at the owner (put) and at replicas (StoreReplicas)."""
    owner, rm, node, intruder = nodes[0], nodes[1], nodes[2], nodes[3]
    policy = WritePolicy({"cortex:resourcemanager": frozenset({rm.peer.node_id})})
    ks = keyspace(owner, policy)
    bad = [
        intruder.trust.sign_record("cortex:resourcemanager", b"evil", 5),
        intruder.trust.sign_record(node_key(node.peer.node_id, "capacity"), b"evil", 5),
        replace(rm.trust.sign_record("cortex:resourcemanager", b"good", 5), value=b"evil"),
        replace(intruder.trust.sign_record("cortex:resourcemanager", b"evil", 5), writer=rm.peer.node_id),
    ]
    for i, record in enumerate(bad):
        [reply] = ks.receive(intruder.peer, PutRecord(i, record), 1.0)
        assert isinstance(reply, Send) and isinstance(reply.message, PutReply)
        assert reply.message.record is None and reply.message.error.startswith("refused"), record
    assert ks.receive(intruder.peer, StoreReplicas(tuple(bad)), 1.0) == []
    assert len(ks.store) == 0 and sum(ks.gate.refused.values()) == 2 * len(bad)
    good = [rm.trust.sign_record("cortex:resourcemanager", b"rm", 5), node.trust.sign_record(node_key(node.peer.node_id), b"n", 5)]
    ks.receive(intruder.peer, StoreReplicas(tuple(good)), 1.0)  # anyone may carry a good record
    assert {r.value for r in ks.store} == {b"rm", b"n"}


def test_other_keys_are_pinned_to_their_first_writer(nodes: list[Node]) -> None:
    """A key with no rule is kept for whoever wrote it first; a later writer is refused, the first may rewrite."""
    owner, first, second = nodes[0], nodes[1], nodes[2]
    ks = keyspace(owner, WritePolicy())
    ks.receive(first.peer, PutRecord(1, first.trust.sign_record("app", b"1", 5)), 1.0)
    [reply] = ks.receive(second.peer, PutRecord(2, second.trust.sign_record("app", b"2", 6)), 1.0)
    assert reply.message.error.startswith("refused")  # type: ignore[union-attr]
    ks.receive(first.peer, PutRecord(3, first.trust.sign_record("app", b"3", 7)), 1.0)
    held = ks.store.get("app")
    assert held is not None and held.value == b"3"


def test_our_put_is_signed_and_a_stale_version_is_retried_above_the_held_one(nodes: list[Node]) -> None:
    """put signs (writer = our id); an owner holding a newer version answers stale with it, and our next put beats it."""
    writer, owner = nodes[1], nodes[0]
    ks_owner = keyspace(owner, WritePolicy())
    newer = writer.trust.sign_record("k", b"future", 10_000)
    ks_owner.receive(writer.peer, PutRecord(1, newer), 0.0)
    ks = KeySpace(writer.peer, replicas=0, request_timeout=1.0, trust=writer.trust, policy=WritePolicy())
    _, [send] = ks.put("k", b"now", owner.peer, 1.0)
    assert isinstance(send, Send) and isinstance(send.message, PutRecord) and send.message.record.version == 1000
    [answer] = ks_owner.receive(writer.peer, send.message, 1.0)
    [done] = ks.receive(owner.peer, answer.message, 1.0)  # type: ignore[union-attr]
    assert done.error.startswith("stale") and done.record is None  # type: ignore[union-attr]
    _, [again] = ks.put("k", b"now", owner.peer, 1.0)
    assert again.message.record.version == 10_001  # type: ignore[union-attr]


def test_gossip_items_are_refused_unless_signed_by_their_publisher(nodes: list[Node]) -> None:
    """A section sees only items whose signature checks; a tampered one is counted and dropped."""
    me, publisher = nodes[0], nodes[1]
    m = Membership(me.peer, SwimConfig(), random.Random(1), trust=me.trust)
    seen: list[GossipItem] = []
    m.sections.register("node-capacity", lambda item: seen.append(item) or True)
    item = publisher.trust.sign_gossip(GossipItem("node-capacity", "k", b"payload"))
    m.receive_piggyback(publisher.peer, [replace(item, payload=b"other")], 1.0)
    assert seen == [] and sum(m.sections.refused.values()) == 1
    m.receive_piggyback(publisher.peer, [item], 1.0)
    assert seen == [item] and key_id(item.signer_key) == item.publisher == publisher.peer.node_id


# ------------------------------------------------------------------ rate limits


def test_token_bucket_per_peer_refills_with_the_clock_and_counts_drops() -> None:
    """Each peer has its own burst; beyond it inputs are dropped until time refills the bucket."""
    limit = PeerRateLimit(rate=10, burst=5)
    assert all(limit.allow(1, 0.0) for _ in range(5)) and not limit.allow(1, 0.0)
    assert limit.allow(2, 0.0)  # another peer's bucket is its own
    assert not limit.allow(1, 0.05) and limit.allow(1, 0.1)  # 0.1 s refills one token
    assert limit.dropped == 2


def test_rate_limit_table_is_bounded_and_floods_of_new_ids_share_one_bucket() -> None:
    """Beyond max_peers, new ids share an overflow bucket; idle full buckets are forgotten first."""
    limit = PeerRateLimit(rate=1, burst=2, max_peers=3)
    for peer in (1, 2, 3):
        assert limit.allow(peer, 0.0)
    assert limit.allow(4, 0.0) and limit.allow(5, 0.0) and not limit.allow(6, 0.0)  # one shared bucket
    assert len(limit) <= 4
    assert limit.allow(7, 100.0)  # everyone refilled: the table makes room


def test_a_peer_flooding_rumours_and_puts_is_cut_off_and_counted(nodes: list[Node]) -> None:
    """Past the burst, a peer's piggybacked rumours are dropped and its puts answered 'rate limited'."""
    me, flooder = nodes[0], nodes[1]
    config = RingConfig(work_bits=BITS, rumour_rate=1, rumour_burst=3, put_rate=1, put_burst=2)
    member = RingMember(me.peer, config, random.Random(1), piggyback_size=piggyback_size, trust=me.trust, policy=WritePolicy())
    member.start(0.0)
    alive = flooder.trust.sign_rumour(MemberUpdate(flooder.peer, ALIVE, 1))
    member.receive(Envelope(flooder.peer, Ack(1), (alive,) * 4, flooder.work, flooder.trust.spki), 0.0)
    assert member.refused["rumours over the rate limit"] == 4
    record = flooder.trust.sign_record("x", b"v", 1)
    replies = [
        a.envelope.body
        for i in range(3)
        for a in member.receive(Envelope(flooder.peer, PutRecord(i, record), (), flooder.work, flooder.trust.spki), 0.0)
        if isinstance(a, Transmit)
    ]
    assert [r.error.startswith("rate limited") for r in replies if isinstance(r, PutReply)][-1]
    assert member.refused["puts over the rate limit"] == 1
    assert member.view().refusals == Refusals(rate_limited=5)
    assert isinstance(Record, type)

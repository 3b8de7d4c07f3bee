"""SWIM with Lifeguard: the core's protocol steps one by one, then scenarios in the simulated network."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable
from typing import cast

import pytest
from twisted.logger import ILogObserver, globalLogPublisher

from cortex_rm.dht.chord_messages import Ping
from cortex_rm.dht.envelope import Send
from cortex_rm.dht.group_view import MAX_TOLD
from cortex_rm.dht.member_table import (
    MemberAlive,
    MemberDied,
    MemberJoined,
    MemberLeft,
    MemberSuspected,
    supersedes,
)
from cortex_rm.dht.membership import Membership, SwimAction
from cortex_rm.dht.peer import Peer
from cortex_rm.dht.probe_evidence import DirectProbeSent
from cortex_rm.dht.probe_relays import MAX_RELAYS
from cortex_rm.dht.suspicion import retransmit_limit
from cortex_rm.dht.swim_config import SwimConfig
from cortex_rm.dht.swim_messages import (
    Ack,
    GossipItem,
    MemberStatus,
    MemberUpdate,
    Nack,
    Probe,
    ProbeRequest,
)
from tests.support.swim_sim import SwimNetwork, estimated_size

ALIVE, SUSPECT, DEAD, LEFT = MemberStatus.ALIVE, MemberStatus.SUSPECT, MemberStatus.DEAD, MemberStatus.LEFT
ME = Peer(100, "me:1")
T, H1, H2, H3 = Peer(1, "t:1"), Peer(2, "h1:1"), Peer(3, "h2:1"), Peer(4, "h3:1")


def sends(actions: list[SwimAction]) -> list[Send]:
    """The Send actions of a step."""
    return [a for a in actions if isinstance(a, Send)]


def member(peers: list[Peer] | None = None, neighbours: list[Peer] | None = None, **config: float) -> Membership:
    """A core that knows ``peers`` (ALIVE) and probes ``neighbours`` (default: T only)."""
    m = Membership(ME, SwimConfig(**config), random.Random(1))  # type: ignore[arg-type]
    for peer in peers if peers is not None else [T, H1, H2, H3]:
        m.heard_from(peer, 0.0)
    m.set_neighbours(neighbours if neighbours is not None else [T], 0.0)
    return m


def start_probe(m: Membership) -> tuple[float, int]:
    """Tick until the core probes; the time and the probe's seq."""
    now = 0.0
    for _ in range(10):
        now = m.next_deadline()
        probes = [s for s in sends(m.tick(now)) if isinstance(s.message, Probe)]
        if probes:
            return now, probes[0].message.seq  # type: ignore[union-attr]
    raise AssertionError("no probe started")


def claim_dead(m: Membership, peer: Peer, relay: Peer, now: float, incarnation: int = 0) -> float:
    """Gossip from ``relay`` says ``peer`` is DEAD; nothing changes until our own probe of it
    (unanswered here) fails, which declares it DEAD.  The time it did."""
    check, evidence = m.receive_piggyback(relay, [MemberUpdate(peer, DEAD, incarnation)], now)
    assert check == Send(peer, Probe(check.message.seq)) and m.status_of(peer) is not DEAD  # type: ignore[union-attr]
    assert evidence == DirectProbeSent(peer)  # the uptime witness's: a direct probe of ours
    for _ in range(100):
        if m.status_of(peer) is DEAD:
            return now
        now = max(now, m.next_deadline())
        m.tick(now)
    raise AssertionError(f"{peer} was never declared dead")


def tick_until(m: Membership, end: float) -> list[SwimAction]:
    """Tick at every deadline up to ``end`` and at ``end`` (as a reactor would); all actions."""
    actions: list[SwimAction] = []
    while m.next_deadline() < end:
        actions += m.tick(m.next_deadline())
    return actions + m.tick(end)


# ------------------------------------------------------------------ precedence


@pytest.mark.parametrize(
    ("current", "update", "applies"),
    [
        (None, (ALIVE, 0), True),
        (None, (SUSPECT, 3), False),
        (None, (DEAD, 3), False),
        ((ALIVE, 1), (ALIVE, 1), False),
        ((ALIVE, 1), (ALIVE, 2), True),
        ((ALIVE, 1), (SUSPECT, 1), True),
        ((ALIVE, 1), (SUSPECT, 0), False),
        ((SUSPECT, 1), (ALIVE, 1), False),
        ((SUSPECT, 1), (ALIVE, 2), True),
        ((SUSPECT, 1), (SUSPECT, 1), False),
        ((SUSPECT, 1), (SUSPECT, 2), True),
        ((SUSPECT, 1), (DEAD, 1), True),
        ((ALIVE, 2), (DEAD, 1), False),
        ((ALIVE, 1), (LEFT, 1), True),
        ((DEAD, 1), (ALIVE, 1), False),
        ((DEAD, 1), (ALIVE, 2), True),
        ((DEAD, 1), (SUSPECT, 5), False),
        ((DEAD, 1), (LEFT, 1), False),
        ((LEFT, 1), (DEAD, 2), False),
        ((LEFT, 1), (ALIVE, 2), True),
    ],
)
def test_swim_precedence_rules(current: tuple[MemberStatus, int] | None, update: tuple[MemberStatus, int], applies: bool) -> None:
    """Higher incarnations win; within one, SUSPECT beats ALIVE and DEAD/LEFT are final; only ALIVE revives."""
    assert supersedes(current, update) is applies


# ------------------------------------------------------------------ probing, step by step


def test_probe_is_answered_with_an_ack_of_its_seq() -> None:
    """Any member acks a Probe with the same seq."""
    assert member().receive(T, Probe(7), 0.0) == [Send(T, Ack(7))]


def test_acked_probe_raises_nothing() -> None:
    """An ack from the target within the period: no indirect probe, no suspicion, LHM stays 0."""
    m = member()
    now, seq = start_probe(m)
    assert m.probe_in_flight == T
    m.receive(T, Ack(seq), now + 0.1)
    assert m.probe_in_flight is None
    assert sends(m.tick(now + 0.6)) == []
    m.tick(now + 1.0)
    assert m.status_of(T) is ALIVE
    assert m.health.score == 0


def test_unanswered_probe_asks_k_alive_helpers_then_suspects_the_target() -> None:
    """No ack by the probe timeout: ProbeRequest to k=3 other ALIVE members; none by the period end: SUSPECT."""
    m = member()
    now, seq = start_probe(m)
    assert m.next_deadline() == pytest.approx(now + 0.5)
    requests = sends(m.tick(now + 0.5))
    assert {s.to for s in requests} == {H1, H2, H3}
    assert {s.message for s in requests} == {ProbeRequest(seq, T)}
    for helper in (H1, H2, H3):
        m.receive(helper, Nack(seq), now + 0.9)
    actions = m.tick(now + 1.0)
    assert MemberSuspected(T, 0) in actions
    assert m.status_of(T) is SUSPECT
    assert MemberUpdate(T, SUSPECT, 0, ME) in m.broadcasts.queued()
    assert m.health.score == 0  # every nack arrived: the target is at fault, not us


def test_ack_forwarded_by_a_helper_counts() -> None:
    """An Ack of our seq from a helper we asked means the target is alive."""
    m = member()
    now, seq = start_probe(m)
    m.tick(now + 0.5)
    m.receive(H2, Ack(seq), now + 0.7)
    m.tick(now + 1.0)
    assert m.status_of(T) is ALIVE


def test_unasked_acks_and_nacks_are_ignored() -> None:
    """An ack of an unknown seq, or from a member we did not ask, changes nothing; nor does a stray nack."""
    m = member()
    now, seq = start_probe(m)
    assert m.receive(H1, Ack(seq), now + 0.1) == []  # H1 was not asked (yet)
    assert m.receive(T, Ack(seq + 50), now + 0.1) == []
    assert m.receive(H1, Nack(999), now + 0.1) == []
    assert m.probe_in_flight == T
    with pytest.raises(TypeError):
        m.receive(T, Ping(1), now)  # type: ignore[arg-type]


def test_helper_forwards_the_targets_ack_or_nacks_in_time() -> None:
    """A ProbeRequest is served by probing the target: its ack goes back as Ack(seq), silence as Nack(seq)."""
    m = member()
    [probe] = m.receive(H1, ProbeRequest(41, T), 10.0)
    assert isinstance(probe, Send) and probe.to == T and isinstance(probe.message, Probe)
    assert m.receive(T, Ack(probe.message.seq), 10.1) == [Send(H1, Ack(41))]
    [probe2] = m.receive(H2, ProbeRequest(42, T), 20.0)
    assert m.next_deadline() <= 20.4
    assert Send(H2, Nack(42)) in m.tick(20.4)
    assert isinstance(probe2, Send) and isinstance(probe2.message, Probe)
    assert m.receive(T, Ack(probe2.message.seq), 20.5) == []  # too late: ignored


def test_local_health_rises_on_failures_and_falls_on_acks() -> None:
    """Missed nacks add one each (and lengthen the next probe); each acked probe takes one off."""
    m = member()
    now, seq = start_probe(m)
    m.tick(now + 0.5)  # three helpers asked, none answers
    [probe] = [s for s in sends(m.tick(now + 1.0)) if isinstance(s.message, Probe) and s.to == T]
    assert m.health.score == 3
    # The next probe waits (1 + 3) probe timeouts before asking helpers.
    assert m.next_deadline() == pytest.approx(now + 1.0 + 4 * 0.5)
    m.receive(T, Ack(probe.message.seq), now + 1.1)  # type: ignore[union-attr]
    assert m.health.score == 2
    for _ in range(3):
        now, seq = start_probe(m)
        m.receive(T, Ack(seq), now + 0.1)
    assert m.health.score == 0


def test_suspicion_expires_into_death_and_confirmations_shorten_it() -> None:
    """A suspicion confirmed by K=2 independent accusers lasts the minimum; then, with a second failed
    probe of ours, DEAD is gossiped."""
    peers = [T, H1, H2, H3] + [Peer(10 + i, f"p{i}:1") for i in range(6)]
    m = member(peers)
    now, seq = start_probe(m)
    m.tick(now + 0.5)
    m.tick(now + 1.0)
    timer = m.suspicion_timer(T)
    assert timer is not None and timer.maximum == pytest.approx(6 * 3 * math.log10(11))  # N = 11
    assert timer.deadline == pytest.approx(now + 1.0 + timer.maximum)
    m.receive_piggyback(H1, [MemberUpdate(T, SUSPECT, 0, H1)], now + 2.0)
    m.receive_piggyback(H3, [MemberUpdate(T, SUSPECT, 0, H1)], now + 2.0)  # a relay of the same accusation
    assert timer.confirmations == 1
    m.receive_piggyback(H3, [MemberUpdate(T, SUSPECT, 0, H2)], now + 2.0)
    assert timer.confirmations == 2
    assert timer.deadline == pytest.approx(now + 1.0 + timer.minimum)
    actions = tick_until(m, timer.deadline)
    assert MemberDied(T, 0) not in actions  # the second probe (LHM 3: four times slower) is in flight
    assert m.probe_in_flight == T
    actions = tick_until(m, timer.deadline + 4 * 1.0)
    assert MemberDied(T, 0) in actions
    assert MemberUpdate(T, DEAD, 0, ME) in m.broadcasts.queued()


def test_suspect_whose_refutation_we_missed_is_probed_before_it_is_declared_dead() -> None:
    """A suspicion we only heard of (our last probe of it did not fail) ends in a probe, not a death."""
    m = member(neighbours=[H1])
    m.receive_piggyback(H1, [MemberUpdate(T, SUSPECT, 0, H1)], 5.0)
    timer = m.suspicion_timer(T)
    assert timer is not None
    m.tick(timer.deadline)
    assert m.status_of(T) is SUSPECT
    probes = [s for s in sends(m.tick(m.next_deadline())) if isinstance(s.message, Probe)]
    assert [p.to for p in probes] == [T]
    # The probe carries the suspicion (buddy system); T's ack carries its refutation.
    assert m.piggyback_for(T, 1000, estimated_size)[0] == MemberUpdate(T, SUSPECT, 0, H1)
    events = m.receive_piggyback(T, [MemberUpdate(T, ALIVE, 1)], timer.deadline + 1.1)
    assert events == [MemberAlive(T, 1)]


# ------------------------------------------------------------------ refutation, buddies, leave, restart


def test_suspicion_of_ourselves_is_refuted_with_a_higher_incarnation() -> None:
    """SUSPECT or DEAD about us at our incarnation: incarnation + 1, ALIVE gossiped.  One above our
    incarnation (which nobody can know) is refused, and refuted at ours + 1 all the same."""
    m = member()
    m.receive_piggyback(T, [MemberUpdate(ME, SUSPECT, 0, T)], 1.0)
    assert m.incarnation == 1
    assert MemberUpdate(ME, ALIVE, 1) in m.broadcasts.queued()
    m.receive_piggyback(T, [MemberUpdate(ME, DEAD, 4, T)], 2.0)
    assert m.incarnation == 2 and sum(m.view.refused.values()) == 1
    assert MemberUpdate(ME, ALIVE, 2) in m.broadcasts.queued()
    assert m.health.score == 2
    m.receive_piggyback(T, [MemberUpdate(ME, SUSPECT, 2, T)], 3.0)
    assert m.incarnation == 3
    m.receive_piggyback(T, [MemberUpdate(ME, SUSPECT, 2, T)], 4.0)  # stale
    assert m.incarnation == 3


def test_buddy_system_puts_the_suspicion_first_for_the_suspect() -> None:
    """A message to a member we suspect leads with its suspicion, whatever else is queued."""
    m = member()
    for i in range(20):
        m.broadcasts.put(GossipItem("s", str(i), b"x" * 10))
    m.receive_piggyback(T, [MemberUpdate(T, ALIVE, 3)], 0.5)
    m.receive_piggyback(H1, [MemberUpdate(T, SUSPECT, 3, H1)], 1.0)
    items = m.piggyback_for(T, 200, estimated_size)
    assert items[0] == MemberUpdate(T, SUSPECT, 3, H1)
    assert sum(estimated_size(i) for i in items) <= 200
    assert items.count(MemberUpdate(T, SUSPECT, 3, H1)) == 1


def test_leave_gossips_left_which_is_not_a_death() -> None:
    """leave() probes the neighbours carrying LEFT; a receiver reports MemberLeft and stops probing it."""
    m = member()
    actions = m.leave(1.0)
    assert {s.to for s in sends(actions)} == {T}
    assert MemberUpdate(ME, LEFT, 0) in m.piggyback_for(T, 1000, estimated_size)
    other = Membership(T, SwimConfig(), random.Random(2))
    other.heard_from(ME, 0.0)
    other.set_neighbours([ME], 0.0)
    assert other.receive_piggyback(ME, [MemberUpdate(ME, LEFT, 0)], 2.0) == [MemberLeft(ME, 0)]
    assert not [s for s in sends(other.tick(3.0) + other.tick(5.0)) if s.to == ME]


def test_restarted_member_comes_back_alive_with_a_higher_incarnation() -> None:
    """A DEAD member announcing ALIVE at a higher incarnation (a restart) rejoins: MemberJoined."""
    m = member()
    m.receive_piggyback(H1, [MemberUpdate(T, ALIVE, 3)], 1.0)
    now = claim_dead(m, T, H1, 1.0, incarnation=3)
    assert m.receive_piggyback(T, [MemberUpdate(T, ALIVE, 3)], now + 1.0) == []
    restarted = Membership(T, SwimConfig(), random.Random(3), incarnation=1_700_000)
    announce = restarted.piggyback_for(ME, 1000, estimated_size)
    assert m.receive_piggyback(T, announce, now + 2.0) == [MemberJoined(T, 1_700_000)]


def test_next_deadline_tells_when_tick_has_work() -> None:
    """Before the first tick the deadline is now; afterwards, ticking earlier than it does nothing."""
    m = member()
    assert m.next_deadline() == 0.0
    m.tick(0.0)
    deadline = m.next_deadline()
    assert 0.0 <= deadline <= 1.0
    assert m.tick(deadline - 1e-6) == []


# ------------------------------------------------------------------ scenarios in the simulated network


def all_alive(net: SwimNetwork) -> bool:
    """Every running node believes every other running node ALIVE."""
    running = net.running()
    return all(net.status(i, j) is ALIVE for i in running for j in running if i != j)


def test_crashed_member_is_declared_dead_by_all_within_the_bound() -> None:
    """10 nodes, 1 s probes: a crash is DEAD everywhere within two probe passes + the longest suspicion + gossip."""
    net = SwimNetwork(seed=11, n=10)
    net.run_until(30)
    net.crash(3)
    crashed_at = net.now
    # Bound: two passes over <= 9 neighbours, the maximal timeout (24 s), a few gossip periods.
    net.run_for(2 * 9 + 24 + 5)
    assert set(net.views_of(3).values()) == {DEAD}
    deaths = [o for o in net.events(MemberDied) if o.event.peer == net.ring[3]]
    assert {o.observer for o in deaths} == {net.ring[i] for i in net.running()}
    assert max(o.time for o in deaths) - crashed_at <= 15  # confirmations make it far quicker
    assert not net.deaths_of_running


def test_suspected_live_member_refutes_and_stays_alive() -> None:
    """A live member falsely suspected (a gossiped accusation) refutes; nobody declares it dead."""
    net = SwimNetwork(seed=12, n=20)
    net.run_until(20)
    accuser, suspect = net.nodes[0].membership, net.ring[7]
    accuser.receive_piggyback(accuser.me, [MemberUpdate(suspect, SUSPECT, 0, accuser.me)], net.now)
    net.run_for(60)
    assert net.nodes[7].membership.incarnation == 1
    assert set(net.views_of(7).values()) == {ALIVE}
    assert not net.events(MemberDied)


def test_short_partition_suspects_then_refutes_on_heal() -> None:
    """A partition well within the minimum suspicion timeout (2 s of 5.2 s): members behind it are
    suspected, and refute after the heal."""
    net = SwimNetwork(seed=8, n=20)
    net.run_until(60)
    net.partition([range(5)])
    net.run_for(2)
    assert net.events(MemberSuspected)
    net.heal()
    net.run_for(30)
    assert all_alive(net)
    assert not net.events(MemberDied)


def test_partition_past_the_suspicion_timeout_kills_then_revives_with_higher_incarnations() -> None:
    """Design: a partition outlasting the suspicion timeout gets each side declared DEAD by the other;
    after the heal, probes of the dead carry the news, they refute and are ALIVE again everywhere."""
    net = SwimNetwork(seed=8, n=20)
    net.run_until(60)
    net.partition([range(5)])
    net.run_for(120)
    declared_dead = {(net.ring.index(o.observer), net.ring.index(o.event.peer)) for o in net.events(MemberDied)}
    assert any(i < 5 <= j for i, j in declared_dead) and any(j < 5 <= i for i, j in declared_dead)
    net.heal()
    net.run_for(2 * net.config.dead_probe_interval + 20)
    assert all_alive(net)
    assert all(net.nodes[j].membership.incarnation >= 1 for _, j in declared_dead)
    assert [o for o in net.events(MemberJoined) if o.time > 180]


def test_node_stalled_mid_probe_distrusts_its_probe_on_waking_and_nobody_dies() -> None:
    """A node stalled mid-probe for 3 s is suspected by others and refutes; on waking it does not accuse
    its target (the probe is inconclusive: the ack waits unread) but raises its own LHM; nobody dies."""
    net = SwimNetwork(seed=7, n=20)
    net.run_until(60)
    stalled = net.nodes[4].membership
    while stalled.probe_in_flight is None:
        net.run_for(0.001)
    target = stalled.probe_in_flight
    before = stalled.health.score
    net.stall(4, 3.0)
    net.run_for(2.999)
    assert stalled.health.score == before
    net.run_for(0.002)
    assert stalled.health.score > before  # woke up late
    net.run_for(90)
    assert not any(o.event.peer == target and o.observer == net.ring[4] for o in net.events(MemberSuspected))
    assert any(o.event.peer == net.ring[4] for o in net.events(MemberSuspected))
    assert not net.events(MemberDied)
    assert all_alive(net)


def test_no_false_deaths_under_10_percent_loss_with_50_nodes_for_two_hours() -> None:
    """10% of messages lost, 50 nodes, 2 simulated hours: suspicions happen, are refuted, nobody is declared dead."""
    net = SwimNetwork(seed=13, n=50, drop_rate=0.10)
    net.run_until(2 * 3600)
    assert net.events(MemberSuspected)
    assert not net.events(MemberDied)
    # Suspicions come and go all the time at this loss rate; nobody is DEAD in anyone's view.
    assert all(net.status(i, j) in (ALIVE, SUSPECT) for i in range(50) for j in range(50) if i != j)


def test_gossip_reaches_all_members_within_log_n_periods() -> None:
    """An item published by one of N = 100 members reaches all within 2 * log2(N) probe periods."""
    n = 100
    net = SwimNetwork(seed=14, n=n)
    received: dict[int, float] = {}

    def receiver(i: int) -> Callable[[GossipItem], bool]:
        return lambda item: received.setdefault(i, net.now) == net.now

    for i, node in enumerate(net.nodes):
        node.membership.sections.register("cap", receiver(i))
    net.run_until(60)
    published_at = net.now
    net.publish(0, "cap", "node-0", b"8 cores")
    received[0] = published_at
    net.run_for(30)
    assert len(received) == n
    assert max(received.values()) - published_at <= 2 * 6.7


def test_retransmit_bound_is_respected() -> None:
    """Each member piggybacks one gossip item at most retransmit_mult * ceil(log10(N + 1)) times."""
    net = SwimNetwork(seed=15, n=50)
    seen: list[set[GossipItem]] = [set() for _ in net.nodes]

    def first_sight(known: set[GossipItem]) -> Callable[[GossipItem], bool]:
        def on_receive(item: GossipItem) -> bool:
            new = item not in known
            known.add(item)
            return new

        return on_receive

    for node, known in zip(net.nodes, seen):
        node.membership.sections.register("cap", first_sight(known))
    net.run_until(60)
    net.envelope_log = []
    seen[0].add(net.publish(0, "cap", "k", b"v"))
    net.run_for(60)
    counts = Counter(e.sender for e in net.envelope_log for item in e.piggyback if isinstance(item, GossipItem))
    assert len(counts) == 50
    assert max(counts.values()) <= retransmit_limit(4, 50) == 8


def test_local_health_rises_behind_a_partition_and_falls_after() -> None:
    """A node cut off from all others sees its probes fail (LHM up); once reconnected, acks bring it back to 0."""
    net = SwimNetwork(seed=16, n=20)
    net.run_until(30)
    net.partition([[0]])
    net.run_for(20)
    assert net.nodes[0].membership.health.score >= 3
    net.heal()
    net.run_for(120)
    assert net.nodes[0].membership.health.score == 0


# ------------------------------------------------------------------ Lifeguard refinements, step by step


def test_neighbour_heard_suspected_is_probed_next() -> None:
    """Gossip that a neighbour is SUSPECT puts it first in our probe order (it is confirmed or told at once)."""
    m = member(neighbours=[H1, H2, H3, T])
    m.tick(0.0)
    m.receive_piggyback(H1, [MemberUpdate(T, SUSPECT, 0, H1)], 0.01)
    probes = [s for s in sends(m.tick(m.next_deadline())) if isinstance(s.message, Probe)]
    assert [p.to for p in probes] == [T]
    assert m.piggyback_for(T, 1000, estimated_size)[0] == MemberUpdate(T, SUSPECT, 0, H1)


def test_member_woken_late_does_not_accuse_its_target_nor_nack() -> None:
    """A tick far past its deadline (we were paused): the probe in flight is inconclusive (no suspicion,
    LHM + 1), a relayed probe gets no nack, and the next probe starts at once."""
    m = member()
    now, seq = start_probe(m)
    [relayed] = m.receive(H1, ProbeRequest(77, H2), now + 0.01)
    actions = m.tick(now + 3.0)  # deadlines were now + 0.41 and now + 0.5
    assert m.status_of(T) is ALIVE
    assert not [a for a in actions if isinstance(a, MemberSuspected)]
    assert Send(H1, Nack(77)) not in actions
    assert m.health.score == 1
    probes = [s for s in sends(m.tick(now + 3.0)) if isinstance(s.message, Probe)]
    assert [p.to for p in probes] == [T]


def test_lone_accusation_is_a_death_only_after_two_failed_probes_of_ours() -> None:
    """No confirmation from others: our first failed probe alone does not kill at the deadline; the check
    we make before it must fail too (each probe carried the suspicion, so a live suspect could answer)."""
    m = member(neighbours=[T], probe_timeout=0.5)
    now, _ = start_probe(m)
    tick_until(m, now + 1.0)
    timer = m.suspicion_timer(T)
    assert timer is not None and timer.confirmations == 0
    events: list[SwimAction] = []
    checks = 0
    while MemberDied(T, 0) not in events:
        deadline = m.next_deadline()
        actions = m.tick(deadline)
        checks += len([s for s in sends(actions) if s.to == T and isinstance(s.message, Probe)])
        events += actions
    assert checks >= 1
    assert m.health.score > 0


def test_acked_check_before_the_deadline_saves_the_suspect() -> None:
    """A suspect that acks our check is not declared dead at the deadline; we keep checking until its
    refutation comes."""
    m = member(neighbours=[T])
    now, _ = start_probe(m)
    tick_until(m, now + 1.0)
    timer = m.suspicion_timer(T)
    assert timer is not None
    t = now + 1.0
    while t < timer.deadline + 5:
        t = m.next_deadline()
        for s in sends(m.tick(t)):
            if s.to == T and isinstance(s.message, Probe):
                m.receive(T, Ack(s.message.seq), t + 0.01)
    assert m.status_of(T) is SUSPECT
    assert m.receive_piggyback(T, [MemberUpdate(T, ALIVE, 1)], t) == [MemberAlive(T, 1)]


def test_our_new_accusation_is_pushed_to_k_members() -> None:
    """The probe period ends without an ack: the suspicion rides at once on probes to k=3 other members."""
    m = member()
    now, _ = start_probe(m)
    m.tick(now + 0.5)
    pushed = [s for s in sends(m.tick(now + 1.0)) if isinstance(s.message, Probe) and s.to != T]
    assert len(pushed) == 3 and T not in {s.to for s in pushed}
    assert m.piggyback_for(pushed[0].to, 1000, estimated_size)[0] == MemberUpdate(T, SUSPECT, 0, ME)


def test_buddy_still_accusing_us_is_told_again_after_a_probe_interval() -> None:
    """A member that repeats an accusation we refuted is told directly again, at most once per probe interval."""
    m = member()
    assert [s.to for s in sends(m.receive_piggyback(T, [MemberUpdate(ME, SUSPECT, 0, T)], 1.0))] == [T]
    assert sends(m.receive_piggyback(T, [MemberUpdate(ME, SUSPECT, 0, T)], 1.5)) == []
    again = sends(m.receive_piggyback(T, [MemberUpdate(ME, SUSPECT, 0, T)], 2.1))
    assert [s.to for s in again] == [T]
    assert m.piggyback_for(T, 1000, estimated_size)[0] == MemberUpdate(ME, ALIVE, 1)


def test_known_member_is_gossiped_again_for_those_who_missed_it() -> None:
    """Anti-entropy: every dead-probe interval, one ALIVE member's state is queued again."""
    m = member(peers=[T])
    m.tick(0.0)
    m.broadcasts.take(10_000, estimated_size)
    while MemberUpdate(T, ALIVE, 0) not in m.broadcasts.queued():
        m.tick(m.next_deadline())
    other = Membership(H1, SwimConfig(), random.Random(5))
    assert other.receive_piggyback(ME, [MemberUpdate(T, ALIVE, 0)], 1.0) == [MemberJoined(T, 0)]


def test_crash_among_ten_is_dead_everywhere_within_8_seconds() -> None:
    """10 nodes, 1 s probes: in the bench's 20 crashes, every member declares the crashed one dead within 8 s.

    (About 1% of crashes take longer: those that none of the 9 probers reaches for 4 s or more.)"""
    for seed in range(20):
        net = SwimNetwork(seed=1000 + seed, n=10)
        net.run_until(30 + net.random.random() * 5)
        victim = net.random.randrange(10)
        net.crash(victim)
        crashed_at = net.now
        net.run_for(8)
        assert set(net.views_of(victim).values()) == {DEAD}, seed
        deaths = [o.time for o in net.events(MemberDied) if o.event.peer == net.ring[victim]]
        assert max(deaths) - crashed_at <= 8


# ------------------------------------------------------------------ bounds on remote input

FORGED = Peer(999, "203.0.113.9:1")


def test_made_up_member_gossiped_alive_dies_and_is_forgotten_after_the_retention() -> None:
    """A member only gossip vouched for, once DEAD, is probed by the dead-member probes until
    ``dead_member_retention`` has passed; then it is forgotten and never probed again."""
    m = member(peers=[T], dead_member_retention=60.0)
    assert m.receive_piggyback(H1, [MemberUpdate(FORGED, ALIVE, 0)], 0.0) == [MemberJoined(FORGED, 0)]
    died = claim_dead(m, FORGED, H1, 1.0)
    before = sends(tick_until(m, died + 59.0))
    assert FORGED in {s.to for s in before}  # probed while it might be a partition
    sends(tick_until(m, died + 62.0))
    assert m.status_of(FORGED) is None and FORGED not in {r.peer for r in m.members()}
    after = sends(tick_until(m, 600.0))
    assert FORGED not in {s.to for s in after}
    # Forgotten is unknown: the member's own ALIVE announcement brings it back.
    assert m.receive_piggyback(FORGED, [MemberUpdate(FORGED, ALIVE, 1)], 601.0) == [MemberJoined(FORGED, 1)]


def test_full_member_table_refuses_made_up_members_and_says_so_once() -> None:
    """Beyond ``max_members`` new members are refused, with one log line; known ones still change."""
    logged: list[dict[str, object]] = []
    observer = cast(ILogObserver, logged.append)
    globalLogPublisher.addObserver(observer)
    try:
        m = member(peers=[T, H1, H2], max_members=4)
        flood = [MemberUpdate(Peer(1000 + i, f"203.0.113.{i}:1"), ALIVE, 0) for i in range(50)]
        events = m.receive_piggyback(H1, flood, 1.0)
    finally:
        globalLogPublisher.removeObserver(observer)
    assert events == [MemberJoined(flood[0].peer, 0)]
    assert len(m.members()) == 4
    assert len([e for e in logged if "table full" in str(e.get("log_format"))]) == 1
    assert m.receive_piggyback(H2, [MemberUpdate(T, SUSPECT, 0, H2)], 2.0) == [MemberSuspected(T, 0)]


def test_swim_config_refuses_no_retention_and_no_room() -> None:
    """``dead_member_retention`` must be positive and ``max_members`` at least 1."""
    with pytest.raises(ValueError):
        SwimConfig(dead_member_retention=0)
    with pytest.raises(ValueError):
        SwimConfig(max_members=0)


def test_probe_request_for_an_address_we_do_not_know_is_nacked_without_connecting() -> None:
    """A ProbeRequest for a stranger, a DEAD or a LEFT member is answered Nack at once: nothing is sent to the target."""
    m = member()
    assert m.receive(H1, ProbeRequest(41, FORGED), 1.0) == [Send(H1, Nack(41))]
    now = claim_dead(m, H3, H2, 1.0)
    assert m.receive(H1, ProbeRequest(42, H3), now + 1.0) == [Send(H1, Nack(42))]
    m.receive_piggyback(H2, [MemberUpdate(T, LEFT, 0)], now + 1.0)
    assert m.receive(H1, ProbeRequest(43, T), now + 2.0) == [Send(H1, Nack(43))]
    assert Send(H1, Nack(41)) not in tick_until(m, now + 2.5)  # nothing relayed, nothing to time out


def test_probe_request_naming_a_members_id_at_another_address_probes_our_address_for_it() -> None:
    """The target is probed at the address in our member table, not the one the requester wrote."""
    m = member()
    [probe] = sends(m.receive(H1, ProbeRequest(41, Peer(T.node_id, "203.0.113.9:1")), 1.0))
    assert probe.to == T and probe.to.address == "t:1" and isinstance(probe.message, Probe)
    assert m.receive(T, Ack(probe.message.seq), 1.1) == [Send(H1, Ack(41))]


def test_flood_of_probe_requests_is_bounded_and_the_excess_nacked() -> None:
    """At most ``MAX_RELAYS`` probes are made for others at once; further requests are nacked."""
    m = member()
    answers = [a for seq in range(MAX_RELAYS + 10) for a in sends(m.receive(H1, ProbeRequest(seq, T), 1.0))]
    assert len([a for a in answers if isinstance(a.message, Probe)]) == MAX_RELAYS
    assert [a.message for a in answers if a.to == H1] == [Nack(seq) for seq in range(MAX_RELAYS, MAX_RELAYS + 10)]


def test_refutation_is_not_sent_to_a_forged_accuser() -> None:
    """An accusation of us naming an unknown or dead accuser is refused; one naming a known id at
    another address makes us connect only to members we know live, at our address for them."""
    m = member()
    assert m.receive_piggyback(H1, [MemberUpdate(ME, SUSPECT, 0, FORGED)], 1.0) == []  # no live accuser: refused
    assert m.incarnation == 0 and sum(m.view.refused.values()) == 1
    told = sends(m.receive_piggyback(H1, [MemberUpdate(ME, SUSPECT, 0, H1)], 1.0))
    assert [s.to for s in told] == [H1]
    now = claim_dead(m, H3, H2, 1.0)
    told = sends(m.receive_piggyback(H2, [MemberUpdate(ME, SUSPECT, 1, Peer(T.node_id, "203.0.113.9:1"))], now + 1.0))
    assert {s.to.address for s in told} == {"t:1", "h2:1"}
    # H3 is DEAD to us: its accusation is refused outright (nobody told, no refutation).
    assert m.receive_piggyback(H2, [MemberUpdate(ME, SUSPECT, 2, H3)], now + 2.0) == []
    assert m.incarnation == 2 and sum(m.view.refused.values()) == 2


def test_refutations_told_directly_are_bounded_per_probe_interval() -> None:
    """However many members repeat an accusation we refuted, at most ``MAX_TOLD`` are told in one probe interval."""
    peers = [Peer(1000 + i, f"p{i}:1") for i in range(3 * MAX_TOLD)]
    m = member(peers=peers, neighbours=[])
    m.receive_piggyback(peers[0], [MemberUpdate(ME, SUSPECT, 0, peers[0])], 1.0)  # refuted: incarnation 1
    told = [s for p in peers for s in sends(m.receive_piggyback(p, [MemberUpdate(ME, SUSPECT, 0, p)], 1.5))]
    assert len(told) == MAX_TOLD - 1
    later = [s for p in peers for s in sends(m.receive_piggyback(p, [MemberUpdate(ME, SUSPECT, 0, p)], 2.6))]
    assert len(later) == MAX_TOLD  # a probe interval later, the old entries make room again

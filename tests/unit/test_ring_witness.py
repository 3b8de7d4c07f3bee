"""A ring member's uptime witness, step by step: what it is fed, what never reaches the owner, what a flood buys.

One ``RingMember`` core on a fake clock whose neighbour ``S`` is put in place by
hand (``chord.consider``); the test plays S, answering (or flooding) the probes
the member sends.  The scenarios on a whole simulated ring (fingers, restarts,
relayed acks, payouts) are in ``test_ring_witness_sim.py``.
"""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from cortex_rm.accounting.attestations import Attestation
from cortex_rm.accounting.uptime_witness import WitnessConfig
from cortex_rm.dht.envelope import Envelope
from cortex_rm.dht.peer import Peer
from cortex_rm.dht.probe_evidence import DirectProbeAcked, DirectProbeSent
from cortex_rm.dht.ring_config import RingConfig
from cortex_rm.dht.ring_member import RingAction, RingMember, Transmit
from cortex_rm.dht.swim_config import SwimConfig
from cortex_rm.dht.swim_messages import Ack, MemberStatus, MemberUpdate, Probe
from cortex_rm.internal.ring_codec import piggyback_size

ME = Peer(1000, "127.0.0.1:7000")
S = Peer(2000, "127.0.0.2:7000")  # our successor (and, in a ring of two, predecessor)
NOW = 1_790_000_000.0  # seconds since the epoch, as the daemon's clock gives
S_INCARNATION = int(NOW * 1000) - 60_000


def witness_of(neighbours: list[Peer], seed: int = 1) -> RingMember:
    """A started member that knows ``neighbours`` (ALIVE at S_INCARNATION) and has the first as successor."""
    m = RingMember(ME, RingConfig(), random.Random(seed), piggyback_size=piggyback_size, incarnation=int(NOW * 1000))
    m.start(NOW)
    for peer in neighbours:
        m.receive(Envelope(peer, Ack(0), (MemberUpdate(peer, MemberStatus.ALIVE, S_INCARNATION),)), NOW)
    m.chord.consider(neighbours[0])
    return m


def probes_to(actions: list[RingAction], peer: Peer) -> list[int]:
    """The seqs of the probes among ``actions`` sent to ``peer``."""
    bodies = [a.envelope.body for a in actions if isinstance(a, Transmit) and a.to == peer]
    return [body.seq for body in bodies if isinstance(body, Probe)]


def run(m: RingMember, seconds: float, now: float = NOW, answer: bool = True, flood: int = 0) -> tuple[int, float]:
    """Tick ``m`` at its deadlines for ``seconds`` from ``now``; S acks each of m's probes to it 10 ms later if
    ``answer``, sending each ack ``1 + flood`` times and ``flood`` acks of seqs never probed.  The probes to S, and
    the time it ended."""
    until, probes = now + seconds, 0
    while now < until:
        now = m.next_deadline(now)
        for seq in probes_to(m.tick(now), S):
            probes += 1
            if answer:
                for _ in range(1 + flood):
                    m.receive(Envelope(S, Ack(seq)), now + 0.01)
                for stray in range(flood):
                    m.receive(Envelope(S, Ack(10**6 + stray)), now + 0.01)
            now += 0.01
    return probes, now


def test_probe_evidence_feeds_the_witness_and_never_reaches_the_owner() -> None:
    """The member probes its successor; DirectProbeSent/DirectProbeAcked go to its witness, not into its actions."""
    m = witness_of([S])
    now = NOW
    seen: list[RingAction] = []
    while not probes_to(seen, S):
        now = m.next_deadline(now)
        seen += m.tick(now)
    seen += m.receive(Envelope(S, Ack(probes_to(seen, S)[0])), now + 0.05)
    assert not [a for a in seen if isinstance(a, (DirectProbeSent, DirectProbeAcked))]
    assert m.uptime.witness is not None and m.uptime.witness.credited == 1


def test_acks_of_a_neighbour_become_one_attestation_in_unix_milliseconds() -> None:
    """Two minutes of answered probes: one run, from the first ack to the last, in ms since the epoch,
    signed by nobody yet (the owner signs), with our ring id as witness; nothing is due before the interval."""
    m = witness_of([S])
    probes, now = run(m, 120)
    assert probes >= 100
    assert m.attestations_due(now) == []  # an hour's interval: not yet
    [attestation] = m.flush_attestations(now)
    assert (attestation.witness, attestation.subject) == (ME.node_id, S.node_id)
    assert NOW * 1000 <= attestation.start_ms < (NOW + 2) * 1000
    assert (NOW + 118) * 1000 < attestation.end_ms <= now * 1000 + 1
    assert m.flush_attestations(now + 1) == []  # flushed: nothing new


def test_a_flood_of_duplicate_and_unsolicited_acks_adds_no_credit() -> None:
    """The same two minutes with each ack sent 50 times plus 50 acks of seqs never probed: exactly the
    credits and attestation of the honest run (one per probe), the flood stopped before the witness."""
    honest, flooded = witness_of([S]), witness_of([S])
    for seq in range(200):  # unsolicited: before any probe
        flooded.receive(Envelope(S, Ack(seq)), NOW)
    probes, now = run(honest, 120)
    assert run(flooded, 120, flood=50) == (probes, now)
    assert honest.uptime.witness is not None and flooded.uptime.witness is not None
    assert flooded.uptime.witness.credited == honest.uptime.witness.credited == probes

    def spans(attestations: list[Attestation]) -> list[tuple[int, int, int]]:
        return [(a.subject, a.start_ms, a.end_ms) for a in attestations]

    assert spans(flooded.flush_attestations(now)) == spans(honest.flush_attestations(now))


def test_a_neighbour_back_at_a_higher_incarnation_starts_a_new_run() -> None:
    """S restarts within the gap (its ALIVE at a higher incarnation reaches us): the minute before and the
    minute after are two attestations, and the time between the last old ack and the first new one is in neither."""
    m = witness_of([S])
    _, now = run(m, 60)
    m.receive(Envelope(S, Ack(0), (MemberUpdate(S, MemberStatus.ALIVE, S_INCARNATION + 61_000),)), now)
    _, end = run(m, 60, now)
    before, after = m.flush_attestations(end)
    assert before.end_ms <= now * 1000 < after.start_ms and after.end_ms > (end - 2) * 1000


def test_a_member_frozen_with_its_neighbour_does_not_attest_the_freeze() -> None:
    """The member and S stopped together for 60 s (no probe sent, S's incarnation unchanged): the minute
    before and the minute after are two attestations; the frozen minute is in neither."""
    m = witness_of([S])
    _, frozen_at = run(m, 60)
    thawed = frozen_at + 60
    _, end = run(m, 60, thawed)
    before, after = m.flush_attestations(end)
    assert before.end_ms <= frozen_at * 1000 and after.start_ms >= thawed * 1000
    assert m.uptime.witness is not None and m.uptime.witness.silences == 1


def test_a_silent_neighbour_leaves_nothing_to_attest() -> None:
    """Probes S never answers credit nothing."""
    m = witness_of([S])
    probes, now = run(m, 30, answer=False)
    assert probes and m.flush_attestations(now) == []


def test_the_witness_config_follows_the_swim_timings() -> None:
    """LAN: one credit a second, acks counted 10 s after their probe (1 s stretched 9 times, plus one), runs
    bridging 5 minutes; WAN (5 s probes): a gap of two slowest passes over 16 neighbours; the interval in ms."""
    lan = RingConfig()
    assert lan.witness_config() == WitnessConfig(1_000, 10_000, 300_000, 3_600_000)
    wan = RingConfig(swim=SwimConfig.wan(), attestation_interval=600.0)
    assert wan.witness_config() == WitnessConfig(5_000, 50_000, 2 * 16 * 45_000, 600_000)


@pytest.mark.parametrize("interval", [0.0, -1.0, 50 * 86_400.0])
def test_an_attestation_interval_out_of_range_is_refused(interval: float) -> None:
    """Not positive, or longer than one attestation may span (~49.7 days): ValueError naming it."""
    with pytest.raises(ValueError, match="attestation_interval"):
        replace(RingConfig(), attestation_interval=interval)

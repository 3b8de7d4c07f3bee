"""A ring member's witness under hostile SWIM traffic: any sequence of envelopes leaves it bounded and honest.

A started ``RingMember`` (open trust, as a test ring) whose successor ``S`` is in
place gets a random interleaving of its own ticks and envelopes -- acks, nacks,
probes and probe requests of arbitrary seqs, from ``S``, from a stranger or from
itself, some duplicated -- and must never raise, never hand probe evidence to its
owner, credit at most one ack per probe it sent to ``S``, and attest only ``S``.
"""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from cortex_rm.dht.envelope import Envelope
from cortex_rm.dht.peer import Peer
from cortex_rm.dht.probe_evidence import DirectProbeAcked, DirectProbeSent
from cortex_rm.dht.ring_config import RingConfig
from cortex_rm.dht.ring_member import RingAction, RingMember, Transmit
from cortex_rm.dht.swim_messages import Ack, Nack, Probe, ProbeRequest
from cortex_rm.internal.ring_codec import piggyback_size
from tests.fuzz.fuzzing import failures_logged, fuzz_settings

ME = Peer(1000, "127.0.0.1:7000")
S = Peer(2000, "127.0.0.2:7000")
STRANGER = Peer(3000, "127.0.0.3:7000")
NOW = 1_790_000_000.0

seqs = st.integers(0, 40) | st.integers(0, 2**63 - 1)
senders = st.sampled_from([S, STRANGER, ME])
bodies = st.one_of(
    st.none(),  # an Ack of the latest probe we sent to S (from whichever sender)
    st.builds(Ack, seqs),
    st.builds(Nack, seqs),
    st.builds(Probe, seqs),
    st.builds(ProbeRequest, seqs, senders),
)
gaps, copies = st.floats(0.0, 1.5), st.integers(1, 5)
steps = st.lists(  # (time to advance, sender, body, copies); half of them S answering our latest probe
    st.tuples(gaps, st.just(S), st.none(), copies) | st.tuples(gaps, senders, bodies, copies),
    max_size=60,
)


def bodies_to_s(outputs: list[RingAction]) -> list[object]:
    return [o.envelope.body for o in outputs if isinstance(o, Transmit) and o.to == S]


@fuzz_settings(150)
@given(steps)
def test_hostile_swim_traffic_credits_at_most_the_probes_we_sent(script: list[tuple[float, Peer, object, int]]) -> None:
    member = RingMember(ME, RingConfig(), random.Random(3), piggyback_size=piggyback_size, incarnation=1)
    member.start(NOW)
    member.chord.consider(S)
    now, probes, latest = NOW, 0, 0
    with failures_logged() as failures:
        for advance, sender, body, copies in script:
            now += advance
            outputs = member.tick(now)
            latest = max([latest, *(b.seq for b in bodies_to_s(outputs) if isinstance(b, Probe))])
            for _ in range(copies):
                envelope = Envelope(sender, Ack(latest) if body is None else body)  # type: ignore[arg-type]
                outputs += member.receive(envelope, now)
            probes += sum(isinstance(b, Probe) for b in bodies_to_s(outputs))
            assert not [o for o in outputs if isinstance(o, (DirectProbeSent, DirectProbeAcked))]
    assert failures == []
    witness = member.uptime.witness
    assert witness is not None and witness.credited <= probes
    assert {a.subject for a in member.flush_attestations(now)} <= {S.node_id}

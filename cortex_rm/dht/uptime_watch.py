"""What a ring member witnesses of its neighbours' uptime: SWIM's probe evidence, filtered and timed.

Glue between membership's evidence (``probe_evidence.py``: our direct probes and
the targets' own acks) and the ``UptimeWitness`` (``accounting/uptime_witness.py``),
which turns them into attestations.  The rules:

* **Only the neighbours the ring makes us watch.**  We probe our successors, our
  predecessor and our fingers, but witness a peer only while it is one of our
  ``successor_list_length`` successors (Chord's successor list) or our predecessor:
  the rule the payout rules check attestations against
  (``accounting/neighbour_history.py``), which can be recomputed from membership
  alone.  A finger depends on when each member refreshed it, so its word would
  not count; evidence about any other peer is passed over (``passed_over``).
* **Time** is ``int(now * 1000)``: the ring's ``now`` is the reactor's seconds,
  Unix time in the daemon, so attestations carry Unix milliseconds.
* **Epoch** is the incarnation our member table holds for the peer at the ack: a
  restarted member comes back at a higher one (so does one that refuted a
  suspicion), and the witness starts a new run instead of bridging the downtime.
* **Every probe we send** tells the witness we are watching, so that a freeze of
  our own (no probe for longer than the ack window) ends its runs.
* The witness exists from ``start`` on (its sequence numbers start above
  ``now_ms * 1024``: above everything a previous process of ours signed); before
  that, evidence is passed over and nothing is due.

The owner takes the attestations due (``due``, every attestation interval at a
random phase), signs and ships them; ``flush`` takes everything, for a clean stop.
"""

from __future__ import annotations

from cortex_rm.accounting.attestations import Attestation
from cortex_rm.accounting.uptime_witness import UptimeWitness, WitnessConfig
from cortex_rm.dht.chord import ChordNode
from cortex_rm.dht.member_table import MemberTable
from cortex_rm.dht.peer import Peer
from cortex_rm.dht.probe_evidence import DirectProbeSent, ProbeEvidence


def watches(chord: ChordNode, peer: Peer) -> bool:
    """Whether ``peer`` is one of ``chord``'s successors or its predecessor: a neighbour we witness."""
    predecessor = chord.predecessor
    if predecessor is not None and predecessor.node_id == peer.node_id:
        return True
    return any(successor.node_id == peer.node_id for successor in chord.successor_list)


def milliseconds(now: float) -> int:
    """The ring's ``now`` (seconds) as the witness counts time."""
    return int(now * 1000)


class UptimeWatch:
    """One member's uptime witness and the filter in front of it (see the module doc)."""

    def __init__(self, me: int, config: WitnessConfig) -> None:
        self.me = me
        self.config = config
        self.witness: UptimeWitness | None = None
        self.passed_over = 0  # evidence about peers we do not witness (fingers, strangers), or before start

    def start(self, now: float) -> None:
        """Begin witnessing (once: a later call keeps the witness and what it saw)."""
        if self.witness is None:
            self.witness = UptimeWitness(self.me, milliseconds(now), self.config)

    def observe(self, evidence: ProbeEvidence, now: float, chord: ChordNode, table: MemberTable) -> None:
        """Feed one piece of probe evidence to the witness if its peer is a neighbour we witness now."""
        witness, peer = self.witness, evidence.peer
        if witness is None or not watches(chord, peer):
            if witness is not None and isinstance(evidence, DirectProbeSent):
                witness.sent(milliseconds(now))  # (any probe says this member is watching: ``probed`` says it too)
            self.passed_over += 1
            return
        if isinstance(evidence, DirectProbeSent):
            witness.probed(peer.node_id, milliseconds(now))
        else:
            member = table.get(peer)
            witness.acknowledged(peer.node_id, milliseconds(now), 0 if member is None else member.incarnation)

    def due(self, now: float) -> list[Attestation]:
        """The attestations to sign now (``UptimeWitness.attestations_due``); [] before ``start``."""
        return [] if self.witness is None else self.witness.attestations_due(milliseconds(now))

    def flush(self, now: float) -> list[Attestation]:
        """Everything seen and not yet attested, open runs included (``UptimeWitness.flush``)."""
        return [] if self.witness is None else self.witness.flush(milliseconds(now))

"""The messages of SWIM failure detection, and what rides piggybacked on them.

A member probes another directly (``Probe`` -> ``Ack``); if no ack comes in time it
asks k others to probe the target for it (``ProbeRequest``); each of them probes
the target with a ``Probe`` of its own and forwards the target's ack as an ``Ack``
of the original ``seq``, or answers ``Nack`` when the target did not answer it
either (Lifeguard: a nack tells the prober that the helper is alive, so the
missing ack is the target's fault and not the prober's own slowness).

``MemberUpdate`` and ``GossipItem`` are not sent on their own: they ride
piggybacked on whatever goes to a peer (``envelope.Envelope.piggyback``).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from cortex_rm.dht.peer import Peer

MAX_INCARNATION = 2**63 - 1
"""The highest incarnation the wire carries (a non-negative i64: ``thrift_fields.MAX_COUNT``).

A member at it can no longer refute: nothing may push an incarnation there but
the member itself (``group_view.py``).
"""


@dataclass(frozen=True)
class Probe:
    """Request: are you alive?  (``seq`` is the prober's, echoed by the ack.)"""

    seq: int


@dataclass(frozen=True)
class Ack:
    """Answer to Probe, or the forwarded answer to a ProbeRequest."""

    seq: int


@dataclass(frozen=True)
class ProbeRequest:
    """Request: probe ``target`` for me and forward its ack as ``Ack(seq)``."""

    seq: int
    target: Peer


@dataclass(frozen=True)
class Nack:
    """Answer to ProbeRequest: I am alive, but ``target`` did not answer me either."""

    seq: int


class MemberStatus(enum.Enum):
    """What the group believes of a member (SWIM's states, plus a graceful LEFT)."""

    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"


@dataclass(frozen=True)
class MemberUpdate:
    """A membership rumour: ``peer`` is ``status`` as of its ``incarnation``.

    Only the member itself raises its incarnation (to refute a suspicion or to
    announce a restart); the others repeat the highest they heard.

    ``accuser`` is set on SUSPECT only: the member whose probe failed.  Relayed
    copies keep the original accuser, so a receiver can count *independent*
    suspicions (Lifeguard's confirmations shorten the suspicion timeout) without
    counting the same rumour twice because two relays carried it.  DEAD names
    its accuser too (the member that declared it).

    Every rumour that travels is signed (``ring_trust.py``): ALIVE and LEFT by the
    member itself (``signer_key`` hashes to ``peer.node_id``; ALIVE carries the
    member's proof of ``work``), SUSPECT and DEAD by the accuser.
    """

    peer: Peer
    status: MemberStatus
    incarnation: int
    accuser: Peer | None = None
    work: int = 0
    signer_key: bytes = b""
    signature: bytes = b""


@dataclass(frozen=True)
class GossipItem:
    """A piggybacked payload of a registered section (node capacity, attestations...).

    ``key`` names what the item is about within its section, so a newer item
    replaces an older one in the retransmission queue instead of queueing behind it.
    ``payload`` is the section's own encoding.  ``publisher`` (a ring id) signed
    it with ``signer_key``; a section may accept items only about their publisher.
    """

    section: str
    key: str
    payload: bytes
    publisher: int = 0
    signer_key: bytes = b""
    signature: bytes = b""


SwimMessage = Probe | Ack | ProbeRequest | Nack
Piggyback = MemberUpdate | GossipItem


def live_peers(members: Iterable[tuple[Peer, MemberStatus, int]], me: Peer) -> dict[int, Peer]:
    """The members a view counts as live (alive or suspected), and ``me``, by ring id."""
    live = {p.node_id: p for p, status, _ in members if status in (MemberStatus.ALIVE, MemberStatus.SUSPECT)}
    live[me.node_id] = me
    return live

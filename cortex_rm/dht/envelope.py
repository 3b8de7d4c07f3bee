"""What travels between ring members: one message, who sent it, and piggybacked rumours.

The transport delivers ``Envelope``s.  Before a receiving member sees one, the
transport has checked that the certificate the sending connection presented hashes
to ``sender.node_id`` (so ``sender`` is authenticated; its ``address`` is where the
sender listens, which the TCP source address is not).  The transport also hands
over the key that certificate carries (``sender_key``, DER SPKI; not on the wire),
so the ring can check the sender's proof of ``work`` (``ring_work.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from cortex_rm.dht.chord_messages import ChordMessage
from cortex_rm.dht.direct_messages import Direct
from cortex_rm.dht.kv_messages import KeySpaceMessage
from cortex_rm.dht.peer import Peer
from cortex_rm.dht.swim_messages import Piggyback, SwimMessage

RingMessage = ChordMessage | SwimMessage | KeySpaceMessage | Direct


@dataclass(frozen=True)
class Envelope:
    """``body`` from ``sender``, with ``piggyback`` rumours for the receiver's membership and sections."""

    sender: Peer
    body: RingMessage
    piggyback: tuple[Piggyback, ...] = ()
    work: int = 0
    sender_key: bytes = b""


@dataclass(frozen=True)
class Send:
    """Action of every ring core: deliver ``message`` to ``to`` (the ring member adds the envelope)."""

    to: Peer
    message: RingMessage

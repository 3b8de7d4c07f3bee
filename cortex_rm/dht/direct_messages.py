"""Direct messages: what services above the ring send one member through the ring's links.

The ring's links (mutual TLS, the sender authenticated by its certificate) carry,
beside Chord, SWIM and the key space, one more message: ``Direct``, an opaque body
for a named ``channel``.  It goes straight to the member it is for, at once and
without rumours riding on it -- never piggybacked on probes -- because what uses it
is latency-sensitive (event triggers, ``cortex_rm/events``).  The ring checks the
sender as it checks every envelope (its certificate, its proof of work), counts it
as heard from, and hands the body to the handler registered for the channel; the
body's own encoding and bounds are the channel's business.
"""

from __future__ import annotations

from dataclasses import dataclass

from cortex_rm.dht.peer import Peer

#: The largest direct body: the ring's frame (1 MiB) less room for the envelope around it.
MAX_DIRECT_BYTES = 1024 * 1024 - 16 * 1024
MAX_CHANNEL_CHARS = 64


@dataclass(frozen=True)
class Direct:
    """One message for the service listening on ``channel`` at the receiving member."""

    channel: str
    body: bytes


@dataclass(frozen=True)
class DirectReceived:
    """Action: ``sender`` (authenticated) sent us ``message``."""

    sender: Peer
    message: Direct

"""A ring member as others address it: its ring id and the address its transport listens on."""

from __future__ import annotations

from dataclasses import dataclass

from cortex_rm.dht.ring_math import format_id


@dataclass(frozen=True, order=True)
class Peer:
    """A ring member: its ring id (SHA-1 of its public key) and its ``host:port``.

    The id is what the ring reasons about; the address is only how to reach it.  A
    transport that receives a message from a ``Peer`` has checked that the
    certificate the sender showed hashes to ``node_id``.
    """

    node_id: int
    address: str

    def short(self) -> str:
        """A short form for logs: the first 10 hex digits of the id and the address."""
        return f"{format_id(self.node_id)[:10]}@{self.address}"

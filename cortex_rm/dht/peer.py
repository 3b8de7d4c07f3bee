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


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``) as (host, port); ValueError when it is not one."""
    host, sep, port = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdecimal() or not 0 < int(port) <= 65535:
        raise ValueError(f"not host:port: {address!r}")
    return host, int(port)

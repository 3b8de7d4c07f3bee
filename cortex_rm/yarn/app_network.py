"""What a node must know of an application to place its containers in the network policy.

Containers share their node's address, so a packet that reaches a container from
another machine cannot say which application sent it by its address.  It says so
by its source port: each running application holds one of ``PORT_SLOTS`` slots,
handed out by the RM when it accepts the application, and every node rewrites
the source port of its containers' connections to other containers into its
application's range (``source_ports``; nftables ``snat``, ``net_policy.py``).  A
node then lets a container's socket accept, from another machine, only the
source ports of its own application.

The ranges lie below the usual ephemeral range (32768-60999), where containers'
own sockets listen, so that no listening port is ever needed as a source port.
Each gives an application 176 source ports per destination endpoint on each node:
Spark keeps one connection per peer and direction, so that is many executors'
worth; a connection closed recently holds its port for conntrack's TIME_WAIT.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Final

#: How many applications may run at once (each holds one slot from acceptance to its end).
PORT_SLOTS: Final = 128
#: How many of them one user's applications may hold at once (so one user cannot take them all).
PORT_SLOTS_PER_USER: Final = PORT_SLOTS // 2
#: The first source port of slot 0.
SOURCE_PORT_BASE: Final = 10000
#: Source ports per slot.
SOURCE_PORTS_PER_SLOT: Final = 176
#: The source ports of containers whose application holds no slot: no container accepts them
#: from another machine.
UNASSIGNED_SOURCE_PORTS: Final = (SOURCE_PORT_BASE + PORT_SLOTS * SOURCE_PORTS_PER_SLOT, 32767)


@dataclass(frozen=True)
class AppNetwork:
    """What the RM tells a node about one application's network."""

    #: The host the application was submitted from, as the RM saw its client ("" unknown):
    #: a client-mode driver runs there.
    client_host: str
    #: The application's slot (``source_ports``); None: it holds none (submitted before
    #: slots existed, or not accepted): its containers are reachable only from this node.
    port_slot: int | None


def source_ports(slot: int) -> tuple[int, int]:
    """The first and last source port of ``slot``."""
    if not 0 <= slot < PORT_SLOTS:
        raise ValueError(f"port slot {slot} is not in 0..{PORT_SLOTS - 1}")
    first = SOURCE_PORT_BASE + slot * SOURCE_PORTS_PER_SLOT
    return first, first + SOURCE_PORTS_PER_SLOT - 1


def free_slot(sequence: int, held: Collection[int]) -> int | None:
    """The slot for the application with sequence number ``sequence`` when ``held`` are taken:
    the first free one from ``sequence`` modulo the slot count on, so slots are used in turn: one
    freed a moment ago (its containers may still be stopping) comes round again only after the
    others; None when every slot is held."""
    for step in range(PORT_SLOTS):
        slot = (sequence + step) % PORT_SLOTS
        if slot not in held:
            return slot
    return None

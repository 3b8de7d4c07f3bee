"""The ring's Direct messages between RM-eligible nodes, in memory, for the journal's unit tests: ``Bus``
delivers what ``Links`` (one per node, the driver's ``JournalRing``) sent, between nodes that are up."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from cortex_rm.dht.peer import Peer
from cortex_rm.internal.journal_codec import JOURNAL_CHANNEL


@dataclass
class Bus:
    """The ring's Direct messages between the nodes that are up, delivered when ``flush`` is called."""

    up: set[int] = field(default_factory=set)
    handlers: dict[int, Callable[[Peer, bytes], None]] = field(default_factory=dict)
    queue: list[tuple[int, int, bytes]] = field(default_factory=list)
    cut: set[int] = field(default_factory=set)  # up (in every view) but unreachable: what they send or are sent is lost

    def flush(self) -> None:
        for _ in range(10_000):
            if not self.queue:
                return
            sender, to, body = self.queue.pop(0)
            if to in self.up and sender in self.up and to in self.handlers and not {to, sender} & self.cut:
                self.handlers[to](Peer(sender, "h:1"), body)
        raise AssertionError("the bus did not settle")


@dataclass
class Links:
    bus: Bus
    me: Peer

    def register_direct(self, channel: str, handler: Callable[[Peer, bytes], None]) -> None:
        assert channel == JOURNAL_CHANNEL
        self.bus.handlers[self.me.node_id] = handler

    def send_direct(self, to: Peer, channel: str, body: bytes) -> None:
        self.bus.queue.append((self.me.node_id, to.node_id, body))

    def live_peers(self) -> dict[int, Peer]:
        return {i: Peer(i, "h:1") for i in self.bus.up}

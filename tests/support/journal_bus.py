"""The ring's Direct messages between RM-eligible nodes, in memory, for the journal's unit tests: ``Bus``
delivers what ``Links`` (one per node, the driver's ``JournalRing``) sent, between nodes that are up, on the
journal's channel (``handlers``) and its snapshots' (``snapshot_handlers``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from cortex_rm.dht.peer import Peer
from cortex_rm.internal.journal_codec import JOURNAL_CHANNEL, SNAPSHOT_CHANNEL


@dataclass
class Bus:
    """The ring's Direct messages between the nodes that are up, delivered when ``flush`` is called."""

    up: set[int] = field(default_factory=set)
    handlers: dict[int, Callable[[Peer, bytes], None]] = field(default_factory=dict)
    snapshot_handlers: dict[int, Callable[[Peer, bytes], None]] = field(default_factory=dict)
    queue: list[tuple[int, int, bytes, str]] = field(default_factory=list)  # sender, to, body, channel
    sent_bytes: dict[str, int] = field(default_factory=dict)  # by channel
    cut: set[int] = field(default_factory=set)  # up (in every view) but unreachable: what they send or are sent is lost

    def flush(self) -> None:
        for _ in range(10_000):
            if not self.queue:
                return
            sender, to, body, channel = self.queue.pop(0)
            handlers = self.handlers if channel == JOURNAL_CHANNEL else self.snapshot_handlers
            if to in self.up and sender in self.up and to in handlers and not {to, sender} & self.cut:
                handlers[to](Peer(sender, "h:1"), body)
        raise AssertionError("the bus did not settle")


@dataclass
class Links:
    bus: Bus
    me: Peer

    def register_direct(self, channel: str, handler: Callable[[Peer, bytes], None]) -> None:
        assert channel in (JOURNAL_CHANNEL, SNAPSHOT_CHANNEL)
        handlers = self.bus.handlers if channel == JOURNAL_CHANNEL else self.bus.snapshot_handlers
        handlers[self.me.node_id] = handler

    def send_direct(self, to: Peer, channel: str, body: bytes) -> None:
        self.bus.queue.append((self.me.node_id, to.node_id, body, channel))
        self.bus.sent_bytes[channel] = self.bus.sent_bytes.get(channel, 0) + len(body)

    def live_peers(self) -> dict[int, Peer]:
        return {i: Peer(i, "h:1") for i in self.bus.up}

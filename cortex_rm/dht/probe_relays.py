"""The probes we make for others (SWIM's indirect probes), bounded against what a requester may ask.

A member whose probe of a target got no ack asks k others to probe it for it
(``ProbeRequest``).  Each helper probes the target with a ``Probe`` of its own,
forwards the target's ack as ``Ack`` of the requester's ``seq``, or answers
``Nack`` when the target stayed silent for ``indirect_probe_timeout``.

Any member may send a request, and it names its target by ring id *and
address*: served blindly, it would make us connect to whatever address anyone
names.  So a request is served only for a target that is in our member table and
not DEAD or LEFT, and we probe it at the address *we* hold for it, not the one in
the request.  Any other request is answered with a ``Nack`` at once: we are alive
but cannot vouch for the target (which is what a nack tells the prober).  At most
``MAX_RELAYS`` probes are in flight for others; beyond that we nack as well.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cortex_rm.dht.envelope import Send
from cortex_rm.dht.member_table import GONE, MemberTable
from cortex_rm.dht.peer import Peer
from cortex_rm.dht.swim_messages import Ack, Nack, Probe, ProbeRequest

MAX_RELAYS = 256
"""Probes in flight for others.  Honest load is a few: each failed probe asks k = 3 helpers."""


@dataclass(slots=True)
class _Relay:
    """A probe of ``target`` we make for ``requester`` (its ``seq``)."""

    requester: Peer
    seq: int
    target: Peer
    deadline: float


class ProbeRelays:
    """The indirect probes we make for others, keyed by the seq of our own probe."""

    def __init__(self, me: Peer, table: MemberTable, timeout: float, next_seq: Callable[[], int]) -> None:
        self.me = me
        self._table = table
        self._timeout = timeout
        self._next_seq = next_seq
        self._relays: dict[int, _Relay] = {}

    def __len__(self) -> int:
        return len(self._relays)

    def next_deadline(self) -> float:
        """When the first relayed probe times out (infinity when there is none)."""
        return min((relay.deadline for relay in self._relays.values()), default=float("inf"))

    def request(self, requester: Peer, message: ProbeRequest, now: float) -> list[Send]:
        """Serve a ``ProbeRequest``: ack it for ourselves, probe a live member we know, or nack at once."""
        if message.target.node_id == self.me.node_id:
            return [Send(requester, Ack(message.seq))]
        member = self._table.get(message.target)
        if member is None or member.status in GONE or len(self._relays) >= MAX_RELAYS:
            return [Send(requester, Nack(message.seq))]
        seq = self._next_seq()
        self._relays[seq] = _Relay(requester, message.seq, member.peer, now + self._timeout)
        return [Send(member.peer, Probe(seq))]

    def acked(self, sender: Peer, seq: int) -> list[Send]:
        """An ack of our probe ``seq``: forward it when it is a relayed probe's, from its target."""
        relay = self._relays.get(seq)
        if relay is None or relay.target.node_id != sender.node_id:
            return []
        del self._relays[seq]
        return [Send(relay.requester, Ack(relay.seq))]

    def expire(self, now: float) -> list[Send]:
        """Nack the requests whose targets stayed silent until their deadline."""
        due = [seq for seq, relay in self._relays.items() if relay.deadline <= now]
        return [Send(relay.requester, Nack(relay.seq)) for relay in map(self._relays.pop, due)]

    def drop_expired(self, now: float) -> None:
        """Forget, without a nack, the requests whose deadline passed (we were paused: a silence we did not witness)."""
        self._relays = {seq: relay for seq, relay in self._relays.items() if relay.deadline > now}

"""An in-memory, deterministic network of SWIM ``Membership`` cores, with fault knobs.

Time is a number the simulation advances; events (message deliveries and each
node's next timer, at its core's ``next_deadline()``) are kept in a heap and run
in time order, ties broken by insertion, so a seed replays a scenario exactly.

Each node's ring neighbours are its 8 successors, its predecessor and log2(N)
fingers in the order of sorted ids (finger i is the node 2**i places further), as
a converged Chord ring would give them; no Chord runs here.

Fault knobs:

* ``drop_rate``: the chance that any one message is lost;
* ``delay``: each message takes a uniform time in ``(low, high)`` seconds;
* ``partition(groups)`` / ``heal()``: messages between different groups are lost
  (checked when they arrive);
* ``crash(i)`` / ``restart(i)``: a crashed node loses everything sent to it and
  does nothing; a restarted one is a new process, at a higher incarnation;
* ``stall(i, seconds)``: the node processes nothing and its timers do not fire;
  what arrives meanwhile waits.  When the stall ends the node catches up as a
  reactor does after a pause: its due timers first (one ``tick``), then the
  messages that waited, in arrival order.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field

from cortex_rm.dht.envelope import Envelope, Send
from cortex_rm.dht.member_table import MemberDied, MembershipEvent
from cortex_rm.dht.membership import Membership, SwimAction
from cortex_rm.dht.peer import Peer
from cortex_rm.dht.probe_evidence import DirectProbeAcked, DirectProbeSent
from cortex_rm.dht.ring_math import RING_SIZE
from cortex_rm.dht.swim_config import SwimConfig
from cortex_rm.dht.swim_messages import GossipItem, MemberStatus, MemberUpdate, Piggyback

SUCCESSORS = 8
BYTE_BUDGET = 1200
"""Piggyback bytes per message: a datagram-sized envelope (about 1,400 bytes) less the body."""

_TIMER, _DELIVER, _STALL_END = 0, 1, 2


def estimated_size(item: Piggyback) -> int:
    """A rumour's size on the wire, about as the Thrift binary protocol encodes it."""
    if isinstance(item, MemberUpdate):
        size = 40 + len(item.peer.address)
        return size + (30 + len(item.accuser.address) if item.accuser is not None else 0)
    return 20 + len(item.section) + len(item.key) + len(item.payload)


def ring_neighbours(ring: list[Peer], index: int) -> list[Peer]:
    """The 8 successors, the predecessor and log2(N) fingers of ``ring[index]`` (ring sorted by id)."""
    n = len(ring)
    chosen = [ring[(index + k) % n] for k in range(1, SUCCESSORS + 1)]
    chosen.append(ring[index - 1])
    chosen += [ring[(index + 2**i) % n] for i in range(max(1, int(math.log2(n))))]
    me = ring[index]
    return list(dict.fromkeys(p for p in chosen if p != me))


@dataclass
class SimNode:
    """One simulated process: its SWIM core and whether it is running."""

    peer: Peer
    membership: Membership
    neighbours: list[Peer]
    crashed: bool = False
    stalled_until: float = 0.0
    backlog: list[Envelope] = field(default_factory=list)
    timer_at: float | None = None


@dataclass(frozen=True)
class Observed:
    """An event a node's core reported: ``observer`` saw ``event`` at ``time``."""

    time: float
    observer: Peer
    event: MembershipEvent


class SwimNetwork:
    """N SWIM members wired through a timed message heap, with drop, delay, partition, crash, restart, stall."""

    def __init__(
        self,
        seed: int,
        n: int,
        config: SwimConfig | None = None,
        *,
        drop_rate: float = 0.0,
        delay: tuple[float, float] = (0.001, 0.010),
        know_everyone: bool = True,
    ) -> None:
        self.random = random.Random(seed)
        self.config = config or SwimConfig()
        self.drop_rate = drop_rate
        self.delay = delay
        self.now = 0.0
        ids = sorted({self.random.randrange(RING_SIZE) for _ in range(n)})
        self.ring = [Peer(node_id, f"10.0.{i // 250}.{i % 250}:7000") for i, node_id in enumerate(ids)]
        self._index = {p.node_id: i for i, p in enumerate(self.ring)}
        self.nodes = [self._new_node(i, incarnation=0) for i in range(n)]
        self._groups: dict[int, int] | None = None
        self._heap: list[tuple[float, int, int, int, Envelope | None]] = []
        self._counter = 0
        self.observed: list[Observed] = []
        self.deaths_of_running: list[Observed] = []
        """MemberDied events about a node that was running (not crashed) when declared dead."""
        self.messages_sent = 0
        self.messages_dropped = 0
        self.items_sent = 0
        self.envelope_log: list[Envelope] | None = None
        """Set to a list to keep every envelope sent (to measure bytes)."""
        for i, node in enumerate(self.nodes):
            if know_everyone:
                for peer in self.ring:
                    self._perform(i, node.membership.heard_from(peer, 0.0))
            self._reschedule(i)

    def _new_node(self, i: int, incarnation: int) -> SimNode:
        peer = self.ring[i]
        neighbours = ring_neighbours(self.ring, i)
        membership = Membership(peer, self.config, random.Random(self.random.getrandbits(64)), incarnation=incarnation)
        membership.set_neighbours(neighbours, self.now)
        return SimNode(peer, membership, neighbours)

    # ------------------------------------------------------------ knobs

    def crash(self, i: int) -> None:
        """Node ``i`` stops: it does nothing and loses what is sent to it."""
        self.nodes[i].crashed = True
        self.nodes[i].backlog.clear()

    def restart(self, i: int, incarnation: int | None = None) -> None:
        """Node ``i`` runs again as a new process, at ``incarnation`` (default: now in ms)."""
        inc = int(self.now * 1000) if incarnation is None else incarnation
        self.nodes[i] = self._new_node(i, inc)
        self._reschedule(i)

    def stall(self, i: int, seconds: float) -> None:
        """Node ``i`` processes nothing for ``seconds``, then catches up (timers first)."""
        node = self.nodes[i]
        node.stalled_until = max(node.stalled_until, self.now + seconds)
        self._push(node.stalled_until, _STALL_END, i, None)

    def partition(self, groups: Iterable[Iterable[int]]) -> None:
        """Lose every message between nodes of different ``groups`` (nodes in no group form one more)."""
        self._groups = {}
        for g, members in enumerate(groups, start=1):
            for i in members:
                self._groups[i] = g

    def heal(self) -> None:
        """End the partition."""
        self._groups = None

    # ------------------------------------------------------------ the loop

    def run_until(self, t: float) -> None:
        """Run every event up to time ``t``; then the clock reads ``t``."""
        heap = self._heap
        while heap and heap[0][0] <= t:
            when, _, kind, i, envelope = heapq.heappop(heap)
            self.now = when
            node = self.nodes[i]
            if node.crashed:
                continue
            if kind == _TIMER:
                if node.timer_at != when or when < node.stalled_until:
                    continue  # stale, or stalled: the stall's end catches up
                node.timer_at = None
                self._perform(i, node.membership.tick(when))
            elif kind == _DELIVER:
                assert envelope is not None
                if when < node.stalled_until:
                    node.backlog.append(envelope)
                    continue
                self._deliver(i, envelope)
            else:
                if when < node.stalled_until:
                    continue  # the stall was extended
                node.timer_at = None
                self._perform(i, node.membership.tick(when))
                backlog, node.backlog = node.backlog, []
                for waiting in backlog:
                    self._deliver(i, waiting)
            self._reschedule(i)
        self.now = t

    def run_for(self, seconds: float) -> None:
        """Run ``seconds`` more of simulated time."""
        self.run_until(self.now + seconds)

    def _deliver(self, i: int, envelope: Envelope) -> None:
        m = self.nodes[i].membership
        sender = envelope.sender
        actions = m.heard_from(sender, self.now)
        if envelope.piggyback:
            actions += m.receive_piggyback(sender, envelope.piggyback, self.now)
        actions += m.receive(sender, envelope.body, self.now)  # type: ignore[arg-type]
        self._perform(i, actions)

    def _perform(self, i: int, actions: list[SwimAction]) -> None:
        node = self.nodes[i]
        for action in actions:
            if isinstance(action, Send):
                self._send(node, action)
            elif isinstance(action, (DirectProbeSent, DirectProbeAcked)):
                continue  # the uptime witness's evidence (the ring member's business): not observed here
            else:
                seen = Observed(self.now, node.peer, action)
                self.observed.append(seen)
                if isinstance(action, MemberDied) and not self.nodes[self._index[action.peer.node_id]].crashed:
                    self.deaths_of_running.append(seen)

    def _send(self, node: SimNode, send: Send) -> None:
        piggyback = node.membership.piggyback_for(send.to, BYTE_BUDGET, estimated_size)
        envelope = Envelope(node.peer, send.message, piggyback)
        self.messages_sent += 1
        self.items_sent += len(piggyback)
        if self.envelope_log is not None:
            self.envelope_log.append(envelope)
        to = self._index[send.to.node_id]
        if self.drop_rate and self.random.random() < self.drop_rate:
            self.messages_dropped += 1
            return
        if self._groups is not None:
            frm = self._index[node.peer.node_id]
            if self._groups.get(frm, 0) != self._groups.get(to, 0):
                self.messages_dropped += 1
                return
        low, high = self.delay
        self._push(self.now + low + (high - low) * self.random.random(), _DELIVER, to, envelope)

    def _push(self, when: float, kind: int, i: int, envelope: Envelope | None) -> None:
        self._counter += 1
        heapq.heappush(self._heap, (when, self._counter, kind, i, envelope))

    def _reschedule(self, i: int) -> None:
        node = self.nodes[i]
        if node.crashed:
            return
        deadline = max(node.membership.next_deadline(), self.now)
        if deadline != node.timer_at and deadline != math.inf:
            node.timer_at = deadline
            self._push(deadline, _TIMER, i, None)

    # ------------------------------------------------------------ the oracle

    def status(self, observer: int, target: int) -> MemberStatus | None:
        """What node ``observer`` believes of node ``target``."""
        return self.nodes[observer].membership.status_of(self.ring[target])

    def running(self) -> list[int]:
        """The nodes that have not crashed."""
        return [i for i, node in enumerate(self.nodes) if not node.crashed]

    def views_of(self, target: int) -> dict[int, MemberStatus | None]:
        """What every running node other than ``target`` believes of it."""
        return {i: self.status(i, target) for i in self.running() if i != target}

    def events(self, kind: type) -> list[Observed]:
        """The observed events of one type, in order."""
        return [o for o in self.observed if isinstance(o.event, kind)]

    def publish(self, i: int, section: str, key: str, payload: bytes) -> GossipItem:
        """Node ``i`` publishes a gossip item (its section must be registered there)."""
        return self.nodes[i].membership.sections.publish(section, key, payload)

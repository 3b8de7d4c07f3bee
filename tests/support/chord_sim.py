"""An in-memory, deterministic network of ``ChordNode`` cores.

Messages are queued and delivered by a loop, in an order drawn from a seeded random
source, so a seed replays a scenario exactly.  Time is a number the simulation
advances; a crashed node silently drops what is sent to it, so its peers learn of
the crash the way they would on a real network: their requests expire.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from cortex_rm.dht.chord import ChordNode
from cortex_rm.dht.chord_lookups import Action, JoinFailed, LookupDone
from cortex_rm.dht.chord_messages import ChordMessage as Message
from cortex_rm.dht.envelope import Send
from cortex_rm.dht.peer import Peer
from cortex_rm.dht.ring_math import RING_SIZE
from tests.support.ring_oracle import neighbour_errors, true_owner

ROUND_SECONDS = 1.0
REQUEST_TIMEOUT = 0.5  # shorter than a round: a request unanswered within its round has failed


class ChordNetwork:
    """N Chord nodes wired through a message queue; nodes can crash and messages can be lost."""

    def __init__(self, seed: int, successor_list_length: int = 8) -> None:
        self.random = random.Random(seed)
        self.successor_list_length = successor_list_length
        self.now = 0.0
        self.nodes: dict[str, ChordNode] = {}
        self.crashed: set[str] = set()
        self._queue: list[tuple[Peer, Peer, Message]] = []
        self.lookups_done: dict[tuple[str, int], LookupDone] = {}
        self.messages_delivered = 0
        self.messages_dropped = 0
        # Fault knob: the chance that any one message is lost on the way.
        self.drop_rate = 0.0

    # ------------------------------------------------------------ membership

    def add_node(self, node_id: int | None = None) -> ChordNode:
        """A new node with a random (or the given) id, not yet on any ring."""
        if node_id is None:
            node_id = self.random.randrange(RING_SIZE)
        address = f"node-{len(self.nodes)}"
        node = ChordNode(
            node_id,
            address,
            successor_list_length=self.successor_list_length,
            request_timeout=REQUEST_TIMEOUT,
        )
        self.nodes[address] = node
        return node

    def join(self, node: ChordNode, introducer: ChordNode) -> None:
        """Start ``node``'s join through ``introducer`` (messages flow on the next deliver)."""
        self._perform(node, node.join(introducer.me, self.now))

    def crash(self, nodes: Iterable[ChordNode]) -> None:
        """Crash nodes at once: they stop answering and never come back."""
        for node in nodes:
            self.crashed.add(node.me.address)

    def leave(self, node: ChordNode) -> None:
        """``node`` leaves gracefully: its Leave messages are delivered, then it is gone."""
        self._perform(node, node.leave(self.now))
        self.deliver()
        self.crashed.add(node.me.address)

    def live_nodes(self) -> list[ChordNode]:
        """The nodes that have not crashed, in creation order."""
        return [n for a, n in self.nodes.items() if a not in self.crashed]

    # ------------------------------------------------------------ the loop

    def _perform(self, node: ChordNode, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Send):
                self._queue.append((node.me, action.to, action.message))
            elif isinstance(action, LookupDone):
                self.lookups_done[(node.me.address, action.lookup_id)] = action
            elif isinstance(action, JoinFailed):
                raise AssertionError(f"{node.me.address} could not join through {action.introducer.address}")

    def deliver(self) -> None:
        """Deliver queued messages, in a seeded random order, until none is left."""
        while self._queue:
            index = self.random.randrange(len(self._queue))
            self._queue[index], self._queue[-1] = self._queue[-1], self._queue[index]
            sender, to, message = self._queue.pop()
            if to.address in self.crashed or sender.address in self.crashed:
                continue
            if self.drop_rate and self.random.random() < self.drop_rate:
                self.messages_dropped += 1
                continue
            self.messages_delivered += 1
            receiver = self.nodes[to.address]
            self._perform(receiver, receiver.receive(sender, message, self.now))

    def advance(self) -> None:
        """Move time on one round and let unanswered requests expire."""
        self.now += ROUND_SECONDS
        for node in self.live_nodes():
            self._perform(node, node.expire(self.now))
        self.deliver()

    def stabilization_round(self) -> None:
        """Every live node, in random order, runs stabilize, fix_fingers and check_predecessor."""
        nodes = self.live_nodes()
        self.random.shuffle(nodes)
        for node in nodes:
            self._perform(node, node.stabilize(self.now))
            self._perform(node, node.fix_fingers(self.now))
            self._perform(node, node.check_predecessor(self.now))
        self.deliver()
        self.advance()

    def stabilize_until_correct(self, max_rounds: int) -> int:
        """Run rounds until the ring is correct; the number of rounds it took (fails after max)."""
        for rounds in range(max_rounds):
            if self.ring_is_correct():
                return rounds
            self.stabilization_round()
        if self.ring_is_correct():
            return max_rounds
        raise AssertionError(f"ring not correct after {max_rounds} rounds: {self.ring_errors()[:5]}")

    def refresh_fingers(self) -> None:
        """Enough rounds for every node to look up each of its distinct fingers once more.

        fix_fingers skips the fingers that are the successor, so a cycle costs about
        log2(N) + a few calls; 20 rounds cover it twice for the rings tested here.
        """
        for _ in range(20):
            self.stabilization_round()

    # ------------------------------------------------------------ the oracle

    def sorted_live(self) -> list[ChordNode]:
        """Live nodes in ring order."""
        return sorted(self.live_nodes(), key=lambda n: n.node_id)

    def true_owner(self, key: int) -> Peer:
        """The first live node at or after ``key`` on the circle."""
        return true_owner([n.me for n in self.sorted_live()], key)

    def ring_errors(self) -> list[str]:
        """Every live node whose successor or predecessor is not its true neighbour."""
        return neighbour_errors(self.live_nodes())

    def ring_is_correct(self) -> bool:
        """Whether every live node's successor and predecessor are its true neighbours."""
        return not self.ring_errors()

    def lookup(self, node: ChordNode, key: int) -> LookupDone:
        """Run one lookup from ``node`` to its end (advancing time over dead hops)."""
        lookup_id, actions = node.lookup(key, self.now)
        self._perform(node, actions)
        for _ in range(node.max_lookup_hops + 1):
            self.deliver()
            done = self.lookups_done.pop((node.me.address, lookup_id), None)
            if done is not None:
                return done
            self.advance()
        raise AssertionError(f"lookup of {key:x} from {node.me.address} never ended")


"""An in-memory, deterministic network of ``KeySpace`` cores over an oracle ring view.

No Chord runs here: the ring view every node is given (``stabilise``) is computed
from the sorted ids of the live members -- each node's predecessor and its successor
list -- as a converged Chord ring would have it.  Owners for puts and gets come from
the same oracle.  Messages are queued and delivered in an order drawn from a seeded
random source, so a seed replays a scenario exactly; time is a number the
simulation advances.

Fault knobs: ``crash`` (the node stops; what is sent to or from it is lost, its
store is kept as if on disk), ``restart`` (a new core over the crashed node's store,
back on the ring), ``join`` (a new node enters the ring), ``leave`` (graceful: hand
off, then go), ``drop_rate`` (any message may be lost).
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from cortex_rm.dht.envelope import Send
from cortex_rm.dht.key_space import KeySpace
from cortex_rm.dht.kv_messages import KeySpaceMessage, Record
from cortex_rm.dht.kv_operations import Action, GetDone, PutDone
from cortex_rm.dht.peer import Peer
from cortex_rm.dht.ring_math import RING_SIZE, key_id

ROUND_SECONDS = 1.0
REQUEST_TIMEOUT = 0.5  # shorter than a round: a request unanswered within its round has failed
SUCCESSOR_LIST_LENGTH = 8


class KeySpaceNetwork:
    """Key-space cores wired through a message queue, with the ring view given by an oracle."""

    def __init__(self, seed: int, replicas: int = 3) -> None:
        self.random = random.Random(seed)
        self.replicas = replicas
        self.now = 0.0
        self.nodes: dict[str, KeySpace] = {}
        self.members: set[str] = set()  # on the ring and running
        self.crashed: set[str] = set()
        self._queue: list[tuple[Peer, Peer, KeySpaceMessage]] = []
        self.outcomes: dict[tuple[str, int], PutDone | GetDone] = {}
        self.messages_delivered = 0
        self.drop_rate = 0.0

    # ------------------------------------------------------------ membership

    def add_node(self, node_id: int | None = None) -> KeySpace:
        """A new node with a random (or the given) id, on the ring (views change at ``stabilise``)."""
        if node_id is None:
            node_id = self.random.randrange(RING_SIZE)
        address = f"node-{len(self.nodes)}"
        node = KeySpace(Peer(node_id, address), self.replicas, REQUEST_TIMEOUT)
        self.nodes[address] = node
        self.members.add(address)
        return node

    def build(self, n: int) -> list[KeySpace]:
        """``n`` nodes with random ids, given their views."""
        nodes = [self.add_node() for _ in range(n)]
        self.stabilise()
        return nodes

    def crash(self, nodes: Iterable[KeySpace]) -> None:
        """Crash nodes at once: they stop; their stores stay as on disk. Views change at ``stabilise``."""
        for node in nodes:
            self.members.discard(node.me.address)
            self.crashed.add(node.me.address)

    def restart(self, node: KeySpace) -> KeySpace:
        """A crashed (or departed) node comes back: a fresh core over its stored records, on the ring."""
        address = node.me.address
        assert address in self.crashed, f"{address} is running"
        fresh = KeySpace(node.me, self.replicas, REQUEST_TIMEOUT, store=node.store.copy())
        self.nodes[address] = fresh
        self.crashed.discard(address)
        self.members.add(address)
        return fresh

    def leave(self, node: KeySpace) -> None:
        """A graceful leave: the node hands off what it owns, then goes."""
        self._perform(node, node.hand_off(self.now))
        self.deliver()
        self.members.discard(node.me.address)
        self.crashed.add(node.me.address)  # gone: it no longer answers (``restart`` brings it back)

    def live_nodes(self) -> list[KeySpace]:
        """The members, in ring order."""
        return sorted((self.nodes[a] for a in self.members), key=lambda n: n.me.node_id)

    # ------------------------------------------------------------ the oracle

    def view_of(self, node: KeySpace) -> tuple[Peer | None, tuple[Peer, ...]]:
        """A converged ring's view for ``node``: its predecessor and successor list."""
        ring = [n.me for n in self.live_nodes()]
        if len(ring) == 1:
            return None, ()
        i = ring.index(node.me)
        successors = tuple(ring[(i + k) % len(ring)] for k in range(1, min(len(ring), SUCCESSOR_LIST_LENGTH + 1)))
        return ring[i - 1], successors

    def owner_of(self, key: str) -> KeySpace:
        """The first member at or after the key's id."""
        point = key_id(key)
        ring = self.live_nodes()
        return next((n for n in ring if n.me.node_id >= point), ring[0])

    def replica_set(self, key: str) -> list[KeySpace]:
        """The owner of ``key`` and its next ``replicas`` successors."""
        ring = self.live_nodes()
        i = ring.index(self.owner_of(key))
        return [ring[(i + k) % len(ring)] for k in range(min(len(ring), self.replicas + 1))]

    def holders(self, key: str) -> dict[str, Record]:
        """The live members that hold a record of ``key``, with the record each holds."""
        held = {n.me.address: n.store.get(key) for n in self.live_nodes()}
        return {address: record for address, record in held.items() if record is not None}

    # ------------------------------------------------------------ the loop

    def _perform(self, node: KeySpace, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Send):
                assert action.to != node.me, "a core never sends to itself"
                assert isinstance(action.message, KeySpaceMessage)
                self._queue.append((node.me, action.to, action.message))
            else:
                self.outcomes[(node.me.address, action.op_id)] = action

    def _running(self, address: str) -> bool:
        return address in self.nodes and address not in self.crashed

    def deliver(self) -> None:
        """Deliver queued messages, in a seeded random order, until none is left."""
        while self._queue:
            index = self.random.randrange(len(self._queue))
            self._queue[index], self._queue[-1] = self._queue[-1], self._queue[index]
            sender, to, message = self._queue.pop()
            if not self._running(to.address) or not self._running(sender.address):
                continue
            if self.drop_rate and self.random.random() < self.drop_rate:
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

    def stabilise(self) -> None:
        """Give every member the oracle's view of its neighbours, and deliver what that sends."""
        for node in self.live_nodes():
            predecessor, successors = self.view_of(node)
            self._perform(node, node.set_ring(predecessor, successors, self.now))
        self.deliver()

    def replicate_rounds(self, rounds: int = 1) -> None:
        """Every member runs ``replicate``, in random order, then time moves on; ``rounds`` times."""
        for _ in range(rounds):
            nodes = self.live_nodes()
            self.random.shuffle(nodes)
            for node in nodes:
                self._perform(node, node.replicate(self.now))
            self.deliver()
            self.advance()

    # ------------------------------------------------------------ operations run to their end

    def start_put(self, client: KeySpace, key: str, value: bytes) -> int:
        """Queue ``client``'s write through the oracle's owner without delivering; its op id."""
        op_id, actions = client.put(key, value, self.owner_of(key).me, self.now)
        self._perform(client, actions)
        return op_id

    def put(self, client: KeySpace, key: str, value: bytes, owner: KeySpace | None = None) -> PutDone:
        """``client`` writes through ``owner`` (the oracle's by default) and waits for ``PutDone``."""
        target = (owner or self.owner_of(key)).me
        op_id, actions = client.put(key, value, target, self.now)
        done = self._run(client, op_id, actions)
        assert isinstance(done, PutDone)
        return done

    def get(self, client: KeySpace, key: str, owner: KeySpace | None = None) -> GetDone:
        """``client`` reads through ``owner`` (the oracle's by default) and waits for ``GetDone``."""
        target = (owner or self.owner_of(key)).me
        op_id, actions = client.get(key, target, self.now)
        done = self._run(client, op_id, actions)
        assert isinstance(done, GetDone)
        return done

    def _run(self, client: KeySpace, op_id: int, actions: list[Action]) -> PutDone | GetDone:
        self._perform(client, actions)
        for _ in range(3):
            self.deliver()
            done = self.outcomes.pop((client.me.address, op_id), None)
            if done is not None:
                return done
            self.advance()
        raise AssertionError(f"operation {op_id} of {client.me.address} never ended")

"""The Chord protocol as a sans-IO core: a node's routing state and the steps that maintain it.

``ChordNode`` never sends, sleeps or reads a clock.  Each protocol step is a method
that takes ``now`` (seconds, from the caller's clock) and returns a list of
*actions*: ``Send`` a message to a peer, or report an outcome (``LookupDone``,
``Joined``, ``JoinFailed``).  The transport (a Twisted protocol, or the in-memory
network of ``tests/support/chord_sim.py``) performs the sends and hands every
message that arrives to ``ChordNode.receive``; a timer calls ``expire`` so requests
without an answer fail.

The protocol (Stoica et al., "Chord", SIGCOMM 2001, with the successor list of
section E.3):

* **Routing state.**  A *successor list* of the ``r`` nodes that follow this one on
  the circle, a *predecessor*, and ``M`` *fingers*: finger i is the first node at or
  after ``n + 2**i``.  A node alone on the ring is its own successor.
* **Lookups are iterative.**  ``find_successor(key)`` answers from local state either
  "it is X" (the key lies in ``(n, successor]``) or "ask Y", Y being the
  ``closest_preceding_node`` of the key.  ``lookup`` follows the "ask Y" answers
  with ``FindSuccessor`` requests, one hop each, until someone answers "it is X".
* **Join** is a lookup of our own id started at an introducer; its answer becomes
  our successor.  Nothing else changes: stabilization inserts us.  While the join
  is under way we know nothing of the ring, so a lookup that reaches us is sent on
  to our introducer; lookups in flight when ``join`` is called end as failed.
* **Stabilize** asks the successor for its predecessor and its successor list.  If
  that predecessor lies between us and our successor, it joined in between and
  becomes our successor.  Our list becomes the successor followed by its list.
  Then we ``Notify`` the successor that we may be its predecessor.
* **Notify**: a node takes the notifier as predecessor when it has none or the
  notifier lies between the old predecessor and itself.
* **fix_fingers** refreshes one finger per call, round robin, with a lookup.
  Fingers whose start lies in ``(n, successor]`` are the successor and are set
  without a lookup, so a call costs at most one lookup.
* **check_predecessor** pings the predecessor and clears it when no answer comes.
* **Failures.**  A request that has no answer by its deadline marks its peer dead
  here: the peer is dropped from the successor list, the fingers and the
  predecessor.  A dead successor is thus replaced by the next entry of the
  successor list; if all of them are gone, the nearest finger (or the predecessor)
  stands in and stabilization walks back to the true successor.  A lookup whose
  hop died is resumed from our own (now corrected) state.  This single-timeout
  rule is the core's own; the SWIM failure detector will feed ``forget`` later.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from twisted.logger import Logger


from cortex_rm.dht.chord_messages import (
    ChordMessage,
    FindSuccessor,
    FindSuccessorReply,
    GetNeighbours,
    Leave,
    NeighboursReply,
    Notify,
    Ping,
    Pong,
)
from cortex_rm.dht.envelope import Send
from cortex_rm.dht.join_lifecycle import JOIN_LIFECYCLE, RingEvent, RingState
from cortex_rm.dht.peer import Peer
from cortex_rm.dht.ring_math import M, distance, finger_start, in_interval

log = Logger()

DEFAULT_SUCCESSOR_LIST_LENGTH = 8
"""r, the successor-list length.

A node loses its place on the ring only when all r of its successors fail before
stabilization replaces them.  If each node fails independently with probability p,
that happens with probability p**r; Chord's analysis takes r = Omega(log2 N), so
that even with half the nodes failing at once (p = 1/2) every node keeps a live
successor with high probability (1 - N/2**r for the whole ring).  We target rings
of up to a few hundred volunteered nodes, log2(256) = 8: with r = 8 any 7
simultaneous neighbour failures are survived for certain, and a 50% crash leaves a
given node without a live successor with probability 1/256.  A list costs r
entries per stabilize reply, which is small.
"""

DEFAULT_REQUEST_TIMEOUT = 3.0
"""Seconds a request may go unanswered before its peer is taken for dead."""

DEFAULT_MAX_LOOKUP_HOPS = 2 * M
"""A lookup that has not ended after this many hops fails (it is looping on stale state)."""


# ------------------------------------------------------------------ actions


@dataclass(frozen=True)
class LookupDone:
    """Outcome of ``lookup``: ``owner`` of ``key`` (None when it failed) after ``hops`` requests."""

    lookup_id: int
    key: int
    owner: Peer | None
    hops: int


@dataclass(frozen=True)
class Joined:
    """Outcome of ``join``: the ring answered with our successor."""

    successor: Peer


@dataclass(frozen=True)
class JoinFailed:
    """Outcome of ``join``: the lookup through ``introducer`` did not end; join again."""

    introducer: Peer


Action = Send | LookupDone | Joined | JoinFailed


@dataclass(frozen=True)
class Found:
    """A ``find_successor`` answer: ``peer`` owns the key."""

    peer: Peer


@dataclass(frozen=True)
class AskNext:
    """A ``find_successor`` answer: ``peer`` is closer to the key; ask it."""

    peer: Peer


LookupStep = Found | AskNext

# What a lookup is for: a caller's lookup, our join, or finger i.
_USER, _JOIN, _FINGER = "user", "join", "finger"


@dataclass
class _Lookup:
    lookup_id: int
    key: int
    purpose: str
    finger_index: int = -1
    hops: int = 0
    introducer: Peer | None = None


@dataclass
class _Pending:
    to: Peer
    deadline: float
    message: ChordMessage
    lookup_id: int | None = None


@dataclass
class _Counter:
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def next(self) -> int:
        return next(self.ids)


class ChordNode:
    """One node's Chord state and protocol steps; every step returns the actions to perform."""

    def __init__(
        self,
        node_id: int,
        address: str,
        *,
        successor_list_length: int = DEFAULT_SUCCESSOR_LIST_LENGTH,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        max_lookup_hops: int = DEFAULT_MAX_LOOKUP_HOPS,
    ) -> None:
        if successor_list_length < 1:
            raise ValueError(f"successor_list_length must be at least 1, not {successor_list_length}")
        self.me = Peer(node_id, address)
        self.successor_list_length = successor_list_length
        self.request_timeout = request_timeout
        self.max_lookup_hops = max_lookup_hops
        # Empty: we are alone, our own successor.
        self._successors: list[Peer] = []
        self.predecessor: Peer | None = None
        self._fingers: list[Peer | None] = [None] * M
        self._next_finger = 0
        self._ids = _Counter()
        self._pending: dict[int, _Pending] = {}
        self._lookups: dict[int, _Lookup] = {}
        self.state = RingState.ALONE
        self._introducer: Peer | None = None

    # ------------------------------------------------------------ state

    @property
    def node_id(self) -> int:
        """Our ring id."""
        return self.me.node_id

    @property
    def joining(self) -> bool:
        """Whether a join is under way (we know nothing of the ring yet)."""
        return self.state is RingState.JOINING

    def _transition(self, event: RingEvent) -> None:
        new = JOIN_LIFECYCLE.next_state(self.state, event)
        if new is not None and new is not self.state:
            log.info("ring {node} {old} -> {new} ({event})", node=self.me.short(), old=self.state.value, new=new.value, event=event.value)
        if new is not None:
            self.state = new

    @property
    def successor(self) -> Peer:
        """The first live node after us as far as we know (ourselves when alone)."""
        return self._successors[0] if self._successors else self.me

    @property
    def successor_list(self) -> tuple[Peer, ...]:
        """Up to r successors, nearest first (empty when alone)."""
        return tuple(self._successors)

    @property
    def fingers(self) -> tuple[Peer | None, ...]:
        """The M fingers; None where unknown (or where it would be ourselves)."""
        return tuple(self._fingers)

    def _known_peers(self) -> list[Peer]:
        peers = [f for f in self._fingers if f is not None] + self._successors
        if self.predecessor is not None:
            peers.append(self.predecessor)
        return [p for p in peers if p != self.me]

    # ------------------------------------------------------------ routing

    def closest_preceding_node(self, key: int, exclude: Peer | None = None) -> Peer:
        """The known node that most closely precedes ``key``: in ``(n, key)``, farthest from n.

        Looks at the fingers and the successor list (the list helps when fingers are
        stale or dead), never at ``exclude``.  Ourselves when no known node lies in
        between.
        """
        best, best_distance = self.me, 0
        for peer in [f for f in self._fingers if f is not None] + self._successors:
            if peer != exclude and in_interval(peer.node_id, self.node_id, key):
                d = distance(self.node_id, peer.node_id)
                if d > best_distance:
                    best, best_distance = peer, d
        return best

    def find_successor(self, key: int, exclude: Peer | None = None) -> LookupStep:
        """One step of a lookup from local state: ``Found(owner)`` or ``AskNext(closer node)``.

        ``exclude`` answers as if that node were not on the ring (a joining node's
        lookup of its own place).
        """
        successor = next((s for s in self._successors if s != exclude), self.me)
        if in_interval(key, self.node_id, successor.node_id, include_right=True):
            return Found(successor)
        closer = self.closest_preceding_node(key, exclude)
        if closer == self.me:
            return Found(successor)
        return AskNext(closer)

    # ------------------------------------------------------------ protocol steps

    def join(self, introducer: Peer, now: float) -> list[Action]:
        """Join the ring that ``introducer`` is on: look up our own id through it.

        Our routing state is reset; the answer (``Joined``) becomes our successor and
        stabilization does the rest.  ``JoinFailed`` means: try another introducer.
        """
        # Whatever was in flight belongs to the old state: callers' lookups fail,
        # maintenance requests are dropped (their late replies will be ignored).
        actions: list[Action] = [
            LookupDone(old.lookup_id, old.key, None, old.hops) for old in self._lookups.values() if old.purpose == _USER
        ]
        self._lookups.clear()
        self._pending.clear()
        self._set_successors([], "join")
        self._set_predecessor(None, "join")
        self._fingers = [None] * M
        self._transition(RingEvent.JOIN)
        self._introducer = introducer
        log.info("ring {node} joining through {introducer}", node=self._name(self.me), introducer=self._name(introducer))
        lookup = _Lookup(self._ids.next(), self.node_id, _JOIN, introducer=introducer)
        self._lookups[lookup.lookup_id] = lookup
        return actions + self._ask(lookup, introducer, now)

    def lookup(self, key: int, now: float) -> tuple[int, list[Action]]:
        """Start an iterative lookup of ``key``; its ``LookupDone`` carries the returned id."""
        lookup = _Lookup(self._ids.next(), key, _USER)
        self._lookups[lookup.lookup_id] = lookup
        return lookup.lookup_id, self._advance(lookup, self.find_successor(key), now)

    def stabilize(self, now: float) -> list[Action]:
        """Ask our successor for its predecessor and successor list (the reply does the work).

        A node alone that has been notified takes its predecessor as successor: the
        two-node ring forms without a message.
        """
        if self.state in (RingState.JOINING, RingState.LEFT):
            return []
        if not self._successors:
            if self.predecessor is None:
                return []
            self._transition(RingEvent.NOTIFIED)
            self._set_successors([self.predecessor], "alone-notified")
            return [Send(self.predecessor, Notify())]
        return [self._request(self.successor, GetNeighbours, now)]

    def fix_fingers(self, now: float) -> list[Action]:
        """Refresh the next finger (round robin) with at most one lookup.

        Fingers whose start is in ``(n, successor]`` are the successor and are set on
        the way; the first finger beyond it is looked up.
        """
        if self.state in (RingState.JOINING, RingState.LEFT):
            return []
        successor = self.successor
        for _ in range(M):
            i = self._next_finger
            self._next_finger = (i + 1) % M
            start = finger_start(self.node_id, i)
            if in_interval(start, self.node_id, successor.node_id, include_right=True):
                self._fingers[i] = None if successor == self.me else successor
                continue
            lookup = _Lookup(self._ids.next(), start, _FINGER, finger_index=i)
            self._lookups[lookup.lookup_id] = lookup
            return self._advance(lookup, self.find_successor(start), now)
        return []

    def check_predecessor(self, now: float) -> list[Action]:
        """Ping the predecessor; with no Pong by the deadline it is cleared."""
        if self.predecessor is None:
            return []
        return [self._request(self.predecessor, Ping, now)]

    def forget(self, peer: Peer) -> None:
        """Take ``peer`` for dead: drop it from the successor list, fingers and predecessor.

        When the successor list runs out, the nearest other known node stands in as
        successor, so stabilization can walk back to the true one.
        """
        if peer == self.me:
            return
        successors = [s for s in self._successors if s != peer]
        self._fingers = [None if f == peer else f for f in self._fingers]
        if self.predecessor == peer:
            self._set_predecessor(None, "dead")
        if not successors:
            others = [p for p in self._known_peers() if p != peer]
            if others:
                successors = [min(others, key=lambda p: distance(self.node_id, p.node_id))]
        self._set_successors(successors, "dead")
        if not self._successors and self.predecessor is None:
            self._transition(RingEvent.LOST_ALL)

    def consider(self, peer: Peer) -> None:
        """Take in a live node the membership layer told us of, if it lies before our successor.

        Chord alone never merges two rings: after a partition healed (or a node alone
        learned of others) each side would keep its own.  A peer between us and our
        successor becomes our successor; stabilization and notify do the rest.
        """
        if peer == self.me or self.state in (RingState.JOINING, RingState.LEFT):
            return
        if in_interval(peer.node_id, self.node_id, self.successor.node_id) or not self._successors:
            if self.state is RingState.ALONE:
                self._transition(RingEvent.NOTIFIED)
            self._set_successors(self._successor_list_from([peer, *self._successors]), "considered")

    def leave(self, now: float) -> list[Action]:
        """Leave gracefully: tell the predecessor and the successor how to close the gap.

        The successor adopts our predecessor; the predecessor splices our successor
        list in where we were.  Afterwards this node answers nothing (its lookups in
        flight fail) until it joins again.  Key hand-off is the key space's part.
        """
        actions: list[Action] = [
            LookupDone(old.lookup_id, old.key, None, old.hops) for old in self._lookups.values() if old.purpose == _USER
        ]
        message = Leave(self.predecessor, tuple(self._successors))
        targets = {p for p in (self.predecessor, self.successor) if p is not None and p != self.me}
        actions += [Send(peer, message) for peer in sorted(targets)]
        self._transition(RingEvent.LEAVE)
        self._lookups.clear()
        self._pending.clear()
        self._set_successors([], "left")
        self._set_predecessor(None, "left")
        self._fingers = [None] * M
        return actions

    # ------------------------------------------------------------ input

    def receive(self, sender: Peer, message: ChordMessage, now: float) -> list[Action]:
        """Handle a message from ``sender`` (as its transport authenticated it)."""
        if self.state is RingState.LEFT:
            return []  # we left: whoever still asks us will time out and forget us
        if isinstance(message, Leave):
            self._neighbour_left(sender, message)
            return []
        if isinstance(message, FindSuccessor):
            if self.joining and self._introducer is not None:
                # We know nothing of the ring yet: send the asker to our introducer.
                return [Send(sender, FindSuccessorReply(message.request_id, self._introducer, False))]
            answer = self.find_successor(message.key, sender if message.exclude_sender else None)
            return [Send(sender, FindSuccessorReply(message.request_id, answer.peer, isinstance(answer, Found)))]
        if isinstance(message, GetNeighbours):
            reply = NeighboursReply(message.request_id, self.predecessor, tuple(self._successors))
            return [Send(sender, reply)]
        if isinstance(message, Notify):
            self._notified(sender)
            return []
        if isinstance(message, Ping):
            return [Send(sender, Pong(message.request_id))]
        # A reply: it must answer a request we still wait for, from the peer we asked.
        pending = self._pending.get(message.request_id)
        if pending is None or pending.to != sender:
            return []
        del self._pending[message.request_id]
        if isinstance(message, FindSuccessorReply) and isinstance(pending.message, FindSuccessor):
            lookup = self._lookups.get(pending.lookup_id) if pending.lookup_id is not None else None
            if lookup is None:
                return []
            step: LookupStep = Found(message.peer) if message.final else AskNext(message.peer)
            return self._advance(lookup, step, now)
        if isinstance(message, NeighboursReply) and isinstance(pending.message, GetNeighbours):
            return self._stabilize_reply(sender, message)
        return []  # Pong: the predecessor is alive, nothing to do

    def expire(self, now: float) -> list[Action]:
        """Fail every request whose deadline has passed: its peer is taken for dead."""
        actions: list[Action] = []
        for request_id, pending in sorted(self._pending.items()):
            if pending.deadline > now or request_id not in self._pending:
                continue
            del self._pending[request_id]
            self.forget(pending.to)
            if pending.lookup_id is not None and pending.lookup_id in self._lookups:
                lookup = self._lookups[pending.lookup_id]
                if lookup.purpose == _JOIN:
                    actions += self._finish(lookup, None)
                else:
                    # Resume from our own state, which no longer holds the dead hop.
                    actions += self._advance(lookup, self.find_successor(lookup.key), now)
        return actions

    # ------------------------------------------------------------ internals

    def _request(self, to: Peer, make: type[GetNeighbours] | type[Ping], now: float) -> Send:
        request_id = self._ids.next()
        message = make(request_id)
        self._pending[request_id] = _Pending(to, now + self.request_timeout, message)
        return Send(to, message)

    def _ask(self, lookup: _Lookup, peer: Peer, now: float) -> list[Action]:
        lookup.hops += 1
        request_id = self._ids.next()
        message = FindSuccessor(request_id, lookup.key, exclude_sender=lookup.purpose == _JOIN)
        self._pending[request_id] = _Pending(peer, now + self.request_timeout, message, lookup.lookup_id)
        return [Send(peer, message)]

    def _advance(self, lookup: _Lookup, step: LookupStep, now: float) -> list[Action]:
        if isinstance(step, Found):
            return self._finish(lookup, step.peer)
        if step.peer == self.me:
            # Someone sent us back to ourselves: answer from local state.
            step = self.find_successor(lookup.key)
            if isinstance(step, Found):
                return self._finish(lookup, step.peer)
        if lookup.hops >= self.max_lookup_hops:
            return self._finish(lookup, None)
        return self._ask(lookup, step.peer, now)

    def _finish(self, lookup: _Lookup, owner: Peer | None) -> list[Action]:
        del self._lookups[lookup.lookup_id]
        if lookup.purpose == _USER:
            return [LookupDone(lookup.lookup_id, lookup.key, owner, lookup.hops)]
        if lookup.purpose == _JOIN:
            assert lookup.introducer is not None
            if owner is None or owner == self.me:
                self._transition(RingEvent.JOIN_FAILED)
                log.warn("ring {node} could not join through {introducer}", node=self._name(self.me), introducer=self._name(lookup.introducer))
                return [JoinFailed(lookup.introducer)]
            self._transition(RingEvent.JOINED)
            self._set_successors([owner], "joined")
            return [Joined(owner)]
        if owner is not None:
            self._fingers[lookup.finger_index] = None if owner == self.me else owner
        return []

    def _notified(self, candidate: Peer) -> None:
        if candidate == self.me:
            return
        if self.predecessor is None or in_interval(candidate.node_id, self.predecessor.node_id, self.node_id):
            self._set_predecessor(candidate, "notified")
        if not self._successors and self.state is RingState.ALONE:
            self._transition(RingEvent.NOTIFIED)
            self._set_successors([candidate], "alone-notified")

    def _neighbour_left(self, leaver: Peer, message: Leave) -> None:
        # Splice the leaver out: its predecessor becomes ours if it was our
        # predecessor, its successors take its place in our list if it was there.
        was_predecessor = self.predecessor == leaver
        if leaver in self._successors:
            at = self._successors.index(leaver)
            chain = self._successors[:at] + list(message.successors) + self._successors[at + 1 :]
            self._set_successors(self._successor_list_from([p for p in chain if p != leaver]), "left")
        self._fingers = [None if f == leaver else f for f in self._fingers]
        if was_predecessor:
            heir = message.predecessor if message.predecessor not in (None, self.me, leaver) else None
            self._set_predecessor(heir, "left")
        if not self._successors and self.predecessor is None:
            self._transition(RingEvent.LOST_ALL)

    def _stabilize_reply(self, successor: Peer, reply: NeighboursReply) -> list[Action]:
        if successor != self.successor:
            return []  # our successor changed while the request was out
        chain = [successor, *reply.successors]
        p = reply.predecessor
        if p is not None and p != self.me and in_interval(p.node_id, self.node_id, successor.node_id):
            chain.insert(0, p)  # p joined between us and our successor
        self._set_successors(self._successor_list_from(chain), "stabilized")
        return [Send(self.successor, Notify())]

    def _successor_list_from(self, chain: list[Peer]) -> list[Peer]:
        # The chain walks clockwise from our successor; once it reaches us it has
        # gone round a ring smaller than r, and the rest repeats.
        result: list[Peer] = []
        for peer in chain:
            if peer == self.me:
                break
            if peer not in result:
                result.append(peer)
            if len(result) == self.successor_list_length:
                break
        return result

    def _set_successors(self, successors: list[Peer], reason: str) -> None:
        # One log event per change of successor, with stable field names.
        old = self.successor
        self._successors = successors
        if self.successor != old:
            log.info(
                "ring {node} successor {old} -> {new} ({reason})",
                node=self._name(self.me),
                old=self._name(old),
                new=self._name(self.successor),
                reason=reason,
            )

    def _set_predecessor(self, predecessor: Peer | None, reason: str) -> None:
        old = self.predecessor
        self.predecessor = predecessor
        if predecessor != old:
            log.info(
                "ring {node} predecessor {old} -> {new} ({reason})",
                node=self._name(self.me),
                old=self._name(old),
                new=self._name(predecessor),
                reason=reason,
            )

    @staticmethod
    def _name(peer: Peer | None) -> str | None:
        return None if peer is None else peer.short()

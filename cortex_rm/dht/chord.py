"""The Chord protocol as a sans-IO core: the steps that keep a node's ``RoutingTable`` current.

``ChordNode`` never sends, sleeps or reads a clock.  Each protocol step is a method
that takes ``now`` (seconds, from the caller's clock) and returns a list of
*actions*: ``Send`` a message to a peer, or report an outcome (``LookupDone``,
``Joined``, ``JoinFailed``; ``chord_lookups.py``, which also keeps the lookups and
requests in flight).  The transport (a Twisted protocol, or the in-memory
network of ``tests/support/chord_sim.py``) performs the sends and hands every
message that arrives to ``ChordNode.receive``; a timer calls ``expire`` so requests
without an answer fail.

The protocol (Stoica et al., "Chord", SIGCOMM 2001, with the successor list of
section E.3):

* **Routing state.**  A *successor list* of the ``r`` nodes that follow this one on
  the circle, a *predecessor*, and ``M`` *fingers*: finger i is the first node at or
  after ``n + 2**i`` (``routing_table.py``).  A node alone is its own successor.
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
  rule is the core's own; the SWIM failure detector also calls ``forget`` for
  members it declares dead or left, and ``consider`` for those that come back
  (``ring_member.py`` wires them).
"""

from __future__ import annotations

from twisted.logger import Logger

from cortex_rm.dht.chord_lookups import (
    FINGER,
    JOIN,
    USER,
    Action,
    Joined,
    JoinFailed,
    Lookup,
    LookupDone,
    RequestsInFlight,
)
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
from cortex_rm.dht.ring_math import M, in_interval
from cortex_rm.dht.routing_table import DEFAULT_SUCCESSOR_LIST_LENGTH, AskNext, Found, LookupStep, RoutingTable

log = Logger()

DEFAULT_REQUEST_TIMEOUT = 3.0
"""Seconds a request may go unanswered before its peer is taken for dead."""

DEFAULT_MAX_LOOKUP_HOPS = 2 * M
"""A lookup that has not ended after this many hops fails (it is looping on stale state)."""


class ChordNode:
    """One node's Chord protocol steps over its ``RoutingTable``; every step returns the actions to perform."""

    def __init__(
        self,
        node_id: int,
        address: str,
        *,
        successor_list_length: int = DEFAULT_SUCCESSOR_LIST_LENGTH,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        max_lookup_hops: int = DEFAULT_MAX_LOOKUP_HOPS,
    ) -> None:
        self.me = Peer(node_id, address)
        self.routing = RoutingTable(self.me, successor_list_length)
        """The successor list, predecessor and fingers; the steps below keep it current."""
        self.request_timeout = request_timeout
        self.max_lookup_hops = max_lookup_hops
        self._in_flight = RequestsInFlight()
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
    def successor_list_length(self) -> int:
        """r, how many successors we keep."""
        return self.routing.successor_list_length

    @property
    def successor(self) -> Peer:
        """The first live node after us as far as we know (ourselves when alone)."""
        return self.routing.successor

    @property
    def successor_list(self) -> tuple[Peer, ...]:
        """Up to r successors, nearest first (empty when alone)."""
        return self.routing.successor_list

    @property
    def fingers(self) -> tuple[Peer | None, ...]:
        """The M fingers; None where unknown (or where it would be ourselves)."""
        return self.routing.fingers

    @property
    def predecessor(self) -> Peer | None:
        """The node just before us, or None when unknown."""
        return self.routing.predecessor

    @predecessor.setter
    def predecessor(self, peer: Peer | None) -> None:
        # For oracles and tests, as before the split: no log event.
        self.routing.install(self.routing.successor_list, peer, self.routing.fingers)

    # ------------------------------------------------------------ routing

    def closest_preceding_node(self, key: int, exclude: Peer | None = None) -> Peer:
        """The known node in ``(n, key)`` farthest from n (``RoutingTable.closest_preceding_node``)."""
        return self.routing.closest_preceding_node(key, exclude)

    def find_successor(self, key: int, exclude: Peer | None = None) -> LookupStep:
        """One lookup step from local state: ``Found(owner)`` or ``AskNext(closer node)``."""
        return self.routing.find_successor(key, exclude)

    # ------------------------------------------------------------ protocol steps

    def join(self, introducer: Peer, now: float) -> list[Action]:
        """Join the ring that ``introducer`` is on: look up our own id through it.

        Our routing state is reset; the answer (``Joined``) becomes our successor and
        stabilization does the rest.  ``JoinFailed`` means: try another introducer.
        """
        # Whatever was in flight belongs to the old state: callers' lookups fail,
        # maintenance requests are dropped (their late replies will be ignored).
        actions: list[Action] = [*self._in_flight.abandon()]
        self.routing.clear("join")
        self._transition(RingEvent.JOIN)
        self._introducer = introducer
        log.info("ring {node} joining through {introducer}", node=self.me.short(), introducer=introducer.short())
        lookup = self._in_flight.start(self.node_id, JOIN, introducer=introducer)
        return actions + self._ask(lookup, introducer, now)

    def lookup(self, key: int, now: float) -> tuple[int, list[Action]]:
        """Start an iterative lookup of ``key``; its ``LookupDone`` carries the returned id."""
        lookup = self._in_flight.start(key, USER)
        return lookup.lookup_id, self._advance(lookup, self.find_successor(key), now)

    def stabilize(self, now: float) -> list[Action]:
        """Ask our successor for its predecessor and successor list (the reply does the work).

        A node alone that has been notified takes its predecessor as successor: the
        two-node ring forms without a message.
        """
        if self.state in (RingState.JOINING, RingState.LEFT):
            return []
        if not self.routing.successor_list:
            if self.predecessor is None:
                return []
            self._transition(RingEvent.NOTIFIED)
            self.routing.set_successors([self.predecessor], "alone-notified")
            return [Send(self.predecessor, Notify())]
        return [self._request(self.successor, GetNeighbours, now)]

    def fix_fingers(self, now: float) -> list[Action]:
        """Refresh the next finger (round robin) with at most one lookup.

        Fingers whose start is in ``(n, successor]`` are the successor and are set on
        the way; the first finger beyond it is looked up.
        """
        if self.state in (RingState.JOINING, RingState.LEFT):
            return []
        due = self.routing.next_finger_to_fix()
        if due is None:
            return []
        i, start = due
        lookup = self._in_flight.start(start, FINGER, finger_index=i)
        return self._advance(lookup, self.find_successor(start), now)

    def check_predecessor(self, now: float) -> list[Action]:
        """Ping the predecessor; with no Pong by the deadline it is cleared."""
        if self.predecessor is None:
            return []
        return [self._request(self.predecessor, Ping, now)]

    def forget(self, peer: Peer) -> None:
        """Take ``peer`` for dead (``RoutingTable.drop``); with no peer left we are alone again."""
        if peer == self.me:
            return
        self.routing.drop(peer)
        if self.routing.lost_all:
            self._transition(RingEvent.LOST_ALL)

    def consider(self, peer: Peer) -> None:
        """Take in a live node the membership layer told us of, if it lies before our successor.

        Chord alone never merges two rings: after a partition healed (or a node alone
        learned of others) each side would keep its own.  A peer between us and our
        successor becomes our successor; stabilization and notify do the rest.
        """
        if self.state in (RingState.JOINING, RingState.LEFT) or not self.routing.admits(peer):
            return
        if self.state is RingState.ALONE:
            self._transition(RingEvent.NOTIFIED)
        self.routing.take_in(peer)

    def leave(self, now: float) -> list[Action]:
        """Leave gracefully: tell the predecessor and the successor how to close the gap.

        The successor adopts our predecessor; the predecessor splices our successor
        list in where we were.  Afterwards this node answers nothing (its lookups in
        flight fail) until it joins again.  Key hand-off is the key space's part.
        """
        message = Leave(self.predecessor, self.successor_list)
        targets = {p for p in (self.predecessor, self.successor) if p is not None and p != self.me}
        self._transition(RingEvent.LEAVE)
        actions: list[Action] = [*self._in_flight.abandon(), *(Send(peer, message) for peer in sorted(targets))]
        self.routing.clear("left")
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
            reply = NeighboursReply(message.request_id, self.predecessor, self.successor_list)
            return [Send(sender, reply)]
        if isinstance(message, Notify):
            self._notified(sender)
            return []
        if isinstance(message, Ping):
            return [Send(sender, Pong(message.request_id))]
        # A reply: it must answer a request we still wait for, from the peer we asked.
        pending = self._in_flight.answered(sender, message.request_id)
        if pending is None:
            return []
        if isinstance(message, FindSuccessorReply) and isinstance(pending.message, FindSuccessor):
            lookup = self._in_flight.lookup_of(pending)
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
        for pending in self._in_flight.overdue(now):
            self.forget(pending.to)
            lookup = self._in_flight.lookup_of(pending)
            if lookup is not None:
                if lookup.purpose == JOIN:
                    actions += self._finish(lookup, None)
                else:
                    # Resume from our own state, which no longer holds the dead hop.
                    actions += self._advance(lookup, self.find_successor(lookup.key), now)
        return actions

    # ------------------------------------------------------------ internals

    def _request(self, to: Peer, make: type[GetNeighbours] | type[Ping], now: float) -> Send:
        return self._in_flight.request(to, make, now + self.request_timeout)

    def _ask(self, lookup: Lookup, peer: Peer, now: float) -> list[Action]:
        lookup.hops += 1
        exclude_sender = lookup.purpose == JOIN

        def find(request_id: int) -> FindSuccessor:
            return FindSuccessor(request_id, lookup.key, exclude_sender=exclude_sender)

        return [self._in_flight.request(peer, find, now + self.request_timeout, lookup)]

    def _advance(self, lookup: Lookup, step: LookupStep, now: float) -> list[Action]:
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

    def _finish(self, lookup: Lookup, owner: Peer | None) -> list[Action]:
        self._in_flight.finish(lookup)
        if lookup.purpose == USER:
            return [LookupDone(lookup.lookup_id, lookup.key, owner, lookup.hops)]
        if lookup.purpose == JOIN:
            assert lookup.introducer is not None
            if owner is None or owner == self.me:
                self._transition(RingEvent.JOIN_FAILED)
                log.warn("ring {node} could not join through {introducer}", node=self.me.short(), introducer=lookup.introducer.short())
                return [JoinFailed(lookup.introducer)]
            self._transition(RingEvent.JOINED)
            self.routing.set_successors([owner], "joined")
            return [Joined(owner)]
        if owner is not None:
            self.routing.set_finger(lookup.finger_index, owner)
        return []

    def _notified(self, candidate: Peer) -> None:
        # Notify: the notifier may be our predecessor; a node alone also takes it as successor.
        if candidate == self.me:
            return
        if self.predecessor is None or in_interval(candidate.node_id, self.predecessor.node_id, self.node_id):
            self.routing.set_predecessor(candidate, "notified")
        if not self.routing.successor_list and self.state is RingState.ALONE:
            self._transition(RingEvent.NOTIFIED)
            self.routing.set_successors([candidate], "alone-notified")

    def _neighbour_left(self, leaver: Peer, message: Leave) -> None:
        # Splice the leaver out: its predecessor becomes ours if it was our
        # predecessor, its successors take its place in our list if it was there.
        self.routing.splice_out(leaver, message.predecessor, message.successors)
        if self.routing.lost_all:
            self._transition(RingEvent.LOST_ALL)

    def _stabilize_reply(self, successor: Peer, reply: NeighboursReply) -> list[Action]:
        if successor != self.successor:
            return []  # our successor changed while the request was out
        chain = [successor, *reply.successors]
        p = reply.predecessor
        if p is not None and p != self.me and in_interval(p.node_id, self.node_id, successor.node_id):
            chain.insert(0, p)  # p joined between us and our successor
        self.routing.set_successors(self.routing.successor_list_from(chain), "stabilized")
        return [Send(self.successor, Notify())]

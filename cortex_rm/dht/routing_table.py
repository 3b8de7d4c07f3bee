"""A Chord node's routing state: its successor list, its predecessor and its fingers.

``RoutingTable`` holds what one node knows of the ring and answers routing questions
from it; it sends nothing and keeps no requests (``chord.ChordNode`` runs the
protocol that keeps it current).  The state, after Stoica et al., "Chord" (SIGCOMM
2001, with the successor list of section E.3):

* the **successor list**: up to ``r`` nodes that follow us on the circle, nearest
  first.  Empty means we know no other node: we are alone, our own successor, and
  own every key.  It never holds ourselves nor a node twice;
* the **predecessor**: the node just before us, or None when unknown;
* ``M`` **fingers**: finger i is the first node at or after ``n + 2**i``
  (``ring_math.finger_start``); None where unknown or where it would be ourselves.

**The closest-preceding rule.**  To route towards a key we pick, among the fingers
and the successor list, the known node in the open arc ``(n, key)`` that lies
farthest from us, i.e. nearest before the key.  It is closer to the key than we
are, so asking it makes progress; with correct fingers each hop at least halves the
remaining distance, which gives Chord's O(log N) hops.  The successor list takes
part so that a lookup still advances when fingers are stale or dead.  A key in
``(n, successor]`` needs no hop: the successor owns it.

Every change of successor or predecessor is logged as one structured event
(``ring {node} successor {old} -> {new} ({reason})``, likewise ``predecessor``) with
the stable fields ``node``, ``old``, ``new`` and ``reason``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from twisted.logger import Logger

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


@dataclass(frozen=True)
class Found:
    """A ``find_successor`` answer: ``peer`` owns the key."""

    peer: Peer


@dataclass(frozen=True)
class AskNext:
    """A ``find_successor`` answer: ``peer`` is closer to the key; ask it."""

    peer: Peer


LookupStep = Found | AskNext


def _name(peer: Peer | None) -> str | None:
    """A peer as the log events name it (None stays None)."""
    return None if peer is None else peer.short()


class RoutingTable:
    """What one node ``me`` knows of the ring, and the routing answers that follow from it."""

    def __init__(self, me: Peer, successor_list_length: int = DEFAULT_SUCCESSOR_LIST_LENGTH) -> None:
        if successor_list_length < 1:
            raise ValueError(f"successor_list_length must be at least 1, not {successor_list_length}")
        self.me = me
        self.successor_list_length = successor_list_length
        # Empty: we are alone, our own successor.
        self._successors: list[Peer] = []
        self._predecessor: Peer | None = None
        self._fingers: list[Peer | None] = [None] * M
        self._next_finger = 0  # fix_fingers' round-robin cursor

    # ------------------------------------------------------------ reading

    @property
    def node_id(self) -> int:
        """Our ring id."""
        return self.me.node_id

    @property
    def successor(self) -> Peer:
        """The first live node after us as far as we know (ourselves when alone)."""
        return self._successors[0] if self._successors else self.me

    @property
    def successor_list(self) -> tuple[Peer, ...]:
        """Up to r successors, nearest first (empty when alone)."""
        return tuple(self._successors)

    @property
    def predecessor(self) -> Peer | None:
        """The node just before us, or None when unknown."""
        return self._predecessor

    @property
    def fingers(self) -> tuple[Peer | None, ...]:
        """The M fingers; None where unknown (or where it would be ourselves)."""
        return tuple(self._fingers)

    @property
    def lost_all(self) -> bool:
        """Whether we know neither a successor nor a predecessor (alone again)."""
        return not self._successors and self._predecessor is None

    def known_peers(self) -> list[Peer]:
        """Every other node we know of: fingers, then successors, then the predecessor (may repeat)."""
        peers = [f for f in self._fingers if f is not None] + self._successors
        if self._predecessor is not None:
            peers.append(self._predecessor)
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

    def successor_list_from(self, chain: Iterable[Peer]) -> list[Peer]:
        """The successor list that ``chain`` (nodes clockwise from our successor) gives.

        Duplicates are skipped and the list stops at r entries, or where the chain
        reaches us: it has then gone round a ring smaller than r, and the rest repeats.
        """
        result: list[Peer] = []
        for peer in chain:
            if peer == self.me:
                break
            if peer not in result:
                result.append(peer)
            if len(result) == self.successor_list_length:
                break
        return result

    # ------------------------------------------------------------ changes

    def set_successors(self, successors: list[Peer], reason: str) -> None:
        """Replace the successor list; logs one event when the successor changes."""
        old = self.successor
        self._successors = successors
        if self.successor != old:
            log.info(
                "ring {node} successor {old} -> {new} ({reason})",
                node=_name(self.me),
                old=_name(old),
                new=_name(self.successor),
                reason=reason,
            )

    def set_predecessor(self, predecessor: Peer | None, reason: str) -> None:
        """Replace the predecessor; logs one event when it changes."""
        old = self._predecessor
        self._predecessor = predecessor
        if predecessor != old:
            log.info(
                "ring {node} predecessor {old} -> {new} ({reason})",
                node=_name(self.me),
                old=_name(old),
                new=_name(predecessor),
                reason=reason,
            )

    def set_finger(self, i: int, peer: Peer) -> None:
        """Finger ``i`` is ``peer`` (stored as None when that is ourselves)."""
        self._fingers[i] = None if peer == self.me else peer

    def next_finger_to_fix(self) -> tuple[int, int] | None:
        """The next finger (round robin) that needs a lookup, as ``(i, its start)``; None if none does.

        Fingers whose start is in ``(n, successor]`` are the successor: they are set
        on the way, so one call finds at most one finger to look up.
        """
        successor = self.successor
        for _ in range(M):
            i = self._next_finger
            self._next_finger = (i + 1) % M
            start = finger_start(self.node_id, i)
            if not in_interval(start, self.node_id, successor.node_id, include_right=True):
                return i, start
            self.set_finger(i, successor)
        return None

    def clear(self, reason: str) -> None:
        """Forget the whole ring (we join anew, or left): alone, no predecessor, no fingers."""
        self.set_successors([], reason)
        self.set_predecessor(None, reason)
        self._fingers = [None] * M

    def drop(self, peer: Peer) -> None:
        """Take ``peer`` for dead: drop it from the successor list, fingers and predecessor.

        When the successor list runs out, the nearest other known node stands in as
        successor, so stabilization can walk back to the true one.
        """
        if peer == self.me:
            return
        successors = [s for s in self._successors if s != peer]
        self._fingers = [None if f == peer else f for f in self._fingers]
        if self._predecessor == peer:
            self.set_predecessor(None, "dead")
        if not successors:
            others = [p for p in self.known_peers() if p != peer]
            if others:
                successors = [min(others, key=lambda p: distance(self.node_id, p.node_id))]
        self.set_successors(successors, "dead")

    def splice_out(self, leaver: Peer, predecessor: Peer | None, successors: Sequence[Peer]) -> None:
        """Close the gap ``leaver`` leaves, given its ``predecessor`` and ``successors``.

        Its predecessor becomes ours if it was our predecessor; its successors take
        its place in our list if it was there; it is dropped from the fingers.
        """
        was_predecessor = self._predecessor == leaver
        if leaver in self._successors:
            at = self._successors.index(leaver)
            chain = self._successors[:at] + list(successors) + self._successors[at + 1 :]
            self.set_successors(self.successor_list_from([p for p in chain if p != leaver]), "left")
        self._fingers = [None if f == leaver else f for f in self._fingers]
        if was_predecessor:
            heir = predecessor if predecessor not in (None, self.me, leaver) else None
            self.set_predecessor(heir, "left")

    def admits(self, peer: Peer) -> bool:
        """Whether a live ``peer`` belongs first in our list: between us and our successor, or we are alone."""
        if peer == self.me:
            return False
        return in_interval(peer.node_id, self.node_id, self.successor.node_id) or not self._successors

    def take_in(self, peer: Peer) -> bool:
        """Make a live ``peer`` we were told of our successor if ``admits`` it; whether it did."""
        if not self.admits(peer):
            return False
        self.set_successors(self.successor_list_from([peer, *self._successors]), "considered")
        return True

    def install(self, successors: Sequence[Peer], predecessor: Peer | None, fingers: Sequence[Peer | None]) -> None:
        """Set the whole routing state at once, without log events: for oracles and tests.

        ``successors`` goes through ``successor_list_from`` (at most r, no repeats,
        never ourselves); ``fingers`` must hold M entries, any that is ourselves is
        stored as None.  The protocol itself never calls this.
        """
        if len(fingers) != M:
            raise ValueError(f"fingers must hold {M} entries, not {len(fingers)}")
        self._successors = self.successor_list_from(successors)
        self._predecessor = None if predecessor == self.me else predecessor
        self._fingers = [None if f == self.me else f for f in fingers]

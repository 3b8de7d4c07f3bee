"""The messages Chord nodes exchange (requests carry a ``request_id`` their reply repeats).

Every message is one-way on the wire; a request's answer is another message that
names the request.  The sender of a message is not a field: the transport
authenticates it (see ``envelope.Envelope``).
"""

from __future__ import annotations

from dataclasses import dataclass

from cortex_rm.dht.peer import Peer


@dataclass(frozen=True)
class FindSuccessor:
    """Request: who owns ``key``, or whom should I ask next?

    ``exclude_sender``: a joining node's own lookup; the receiver answers as if the
    sender were not on the ring (a restarted node may still be listed in its old
    place, and the answer it needs is its successor, not itself).
    """

    request_id: int
    key: int
    exclude_sender: bool = False


@dataclass(frozen=True)
class FindSuccessorReply:
    """Answer to FindSuccessor: ``peer`` owns the key when ``final``, else ask ``peer``."""

    request_id: int
    peer: Peer
    final: bool


@dataclass(frozen=True)
class GetNeighbours:
    """Request (stabilize): send me your predecessor and your successor list."""

    request_id: int


@dataclass(frozen=True)
class NeighboursReply:
    """Answer to GetNeighbours."""

    request_id: int
    predecessor: Peer | None
    successors: tuple[Peer, ...]


@dataclass(frozen=True)
class Notify:
    """One-way: the sender believes it may be the receiver's predecessor."""


@dataclass(frozen=True)
class Ping:
    """Request (check_predecessor): are you alive?"""

    request_id: int


@dataclass(frozen=True)
class Pong:
    """Answer to Ping."""

    request_id: int


@dataclass(frozen=True)
class Leave:
    """One-way, from a node leaving gracefully to its predecessor and its successor.

    ``predecessor`` is the leaver's predecessor (its successor adopts it) and
    ``successors`` its successor list (its predecessor splices it in where the
    leaver was).
    """

    predecessor: Peer | None
    successors: tuple[Peer, ...]


ChordMessage = FindSuccessor | FindSuccessorReply | GetNeighbours | NeighboursReply | Notify | Ping | Pong | Leave

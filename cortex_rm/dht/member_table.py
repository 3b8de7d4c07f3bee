"""Every member a node ever heard of, SWIM's precedence rules, and the events of each transition.

A member's state is a status and the incarnation it holds for.  Only the member
itself raises its incarnation: to refute a suspicion or a death, or when it
restarts.  Everyone else repeats the highest incarnation heard, and an update
replaces the state it supersedes (``supersedes``):

=================  ====================================================
current            applied update
=================  ====================================================
unknown            ALIVE at any incarnation (others are ignored: the
                   member's own ALIVE announcement will reach us)
ALIVE i            ALIVE j > i; SUSPECT/DEAD/LEFT j >= i
SUSPECT i          ALIVE j > i; SUSPECT j > i; DEAD/LEFT j >= i
                   (SUSPECT i again is a *confirmation*, not a transition)
DEAD i, LEFT i     ALIVE j > i only: final for that incarnation; the
                   member comes back by refuting or restarting higher
=================  ====================================================

Each status change is one structured log event and one event for the caller:

* unknown, DEAD or LEFT -> ALIVE: ``MemberJoined``
* ALIVE -> SUSPECT: ``MemberSuspected``;  SUSPECT -> ALIVE: ``MemberAlive``
* -> DEAD: ``MemberDied``;  -> LEFT: ``MemberLeft`` (a graceful leave, not a failure)

The table is bounded, since any member may gossip made-up ones: DEAD and LEFT
members are forgotten after a retention time (``reap``), and beyond
``max_members`` new members are refused (``has_room``).  A forgotten member is
unknown again: its own ALIVE announcement brings it back.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from twisted.logger import Logger

from cortex_rm.dht.peer import Peer
from cortex_rm.dht.swim_messages import MemberStatus, MemberUpdate

log = Logger()

ALIVE, SUSPECT, DEAD, LEFT = MemberStatus.ALIVE, MemberStatus.SUSPECT, MemberStatus.DEAD, MemberStatus.LEFT
GONE = frozenset({DEAD, LEFT})
"""Statuses final for their incarnation: the member is no longer probed and no longer counted."""

# Within one incarnation, the stronger claim wins.
_RANK = {ALIVE: 0, SUSPECT: 1, DEAD: 2, LEFT: 2}


@dataclass(frozen=True)
class MemberJoined:
    """``peer`` is ALIVE and was unknown, DEAD or LEFT before (the ring may take it in)."""

    peer: Peer
    incarnation: int


@dataclass(frozen=True)
class MemberSuspected:
    """``peer`` is suspected; it has a suspicion timeout to refute."""

    peer: Peer
    incarnation: int


@dataclass(frozen=True)
class MemberAlive:
    """``peer`` refuted a suspicion: ALIVE again at a higher incarnation."""

    peer: Peer
    incarnation: int


@dataclass(frozen=True)
class MemberDied:
    """``peer`` is declared dead (the ring forgets it; the RM marks its node LOST)."""

    peer: Peer
    incarnation: int


@dataclass(frozen=True)
class MemberLeft:
    """``peer`` left the group gracefully (the ring forgets it; not a failure)."""

    peer: Peer
    incarnation: int


MembershipEvent = MemberJoined | MemberSuspected | MemberAlive | MemberDied | MemberLeft


def supersedes(current: tuple[MemberStatus, int] | None, update: tuple[MemberStatus, int]) -> bool:
    """Whether ``update`` (status, incarnation) replaces the ``current`` state (None: unknown)."""
    status, incarnation = update
    if current is None:
        return status is ALIVE
    current_status, current_incarnation = current
    if current_status in GONE:
        return status is ALIVE and incarnation > current_incarnation
    return (incarnation, _RANK[status]) > (current_incarnation, _RANK[current_status])


@dataclass(slots=True)
class Member:
    """One row of the member table."""

    peer: Peer
    status: MemberStatus
    incarnation: int
    since: float
    """When the status last changed (seconds, caller's clock)."""
    rumour: MemberUpdate | None = None
    """The (signed) rumour that set this state: what we repeat about the member."""


class MemberTable:
    """The members we heard of (never ourselves), keyed by ring id, with a count of the live ones."""

    def __init__(self, me: Peer, max_members: int = 16384) -> None:
        self.me = me
        self.max_members = max_members
        self._members: dict[int, Member] = {}
        self._live = 0
        self._refusing = False  # a refusal was logged and the table has not had room since

    def __len__(self) -> int:
        return len(self._members)

    def __iter__(self) -> Iterator[Member]:
        return iter(list(self._members.values()))

    def get(self, peer: Peer) -> Member | None:
        """The row of ``peer`` (by ring id), if known."""
        return self._members.get(peer.node_id)

    def get_by_id(self, node_id: int) -> Member | None:
        """The row of the member with ring id ``node_id``, if known."""
        return self._members.get(node_id)

    @property
    def live_count(self) -> int:
        """N: the members not DEAD or LEFT, ourselves included."""
        return self._live + 1

    def peers(self, *statuses: MemberStatus) -> list[Peer]:
        """The members currently in one of ``statuses``."""
        return [m.peer for m in self._members.values() if m.status in statuses]

    def has_room(self, peer: Peer) -> bool:
        """Whether a new member ``peer`` may join the table (it is below ``max_members``).

        The first refusal is logged; the next is logged only after the table had room again.
        """
        if len(self._members) < self.max_members:
            self._refusing = False
            return True
        if not self._refusing:
            self._refusing = True
            log.warn(
                "swim {node} member table full ({max_members}): new members refused, first {member}",
                node=self.me.short(),
                max_members=self.max_members,
                member=peer.short(),
            )
        return False

    def reap(self, now: float, retention: float) -> list[Member]:
        """Forget the DEAD and LEFT members that have been so for ``retention`` seconds; the forgotten rows."""
        gone = [m for m in self._members.values() if m.status in GONE and now - m.since >= retention]
        for member in gone:
            del self._members[member.peer.node_id]
            log.info(
                "swim {node} member {member} {old} -> forgotten at incarnation {incarnation} (retention {retention} s)",
                node=self.me.short(),
                member=member.peer.short(),
                old=member.status.value,
                incarnation=member.incarnation,
                retention=retention,
            )
        return gone

    def update(self, peer: Peer, status: MemberStatus, incarnation: int, now: float, reason: str) -> MembershipEvent | None:
        """Apply an update that ``supersedes`` the current state; the event of the transition, if any.

        The caller checks precedence first.  A newer address of the same ring id
        replaces the old one (a restarted member may listen elsewhere).
        """
        member = self._members.get(peer.node_id)
        old = None if member is None else member.status
        if member is None:
            member = Member(peer, status, incarnation, now)
            self._members[peer.node_id] = member
        else:
            member.peer = peer
            member.incarnation = incarnation
            if old is not status:
                member.status = status
                member.since = now
        if old is status:
            return None
        if (old is None or old in GONE) and status not in GONE:
            self._live += 1
        elif old is not None and old not in GONE and status in GONE:
            self._live -= 1
        log.info(
            "swim {node} member {member} {old} -> {new} at incarnation {incarnation} ({reason})",
            node=self.me.short(),
            member=peer.short(),
            old=None if old is None else old.value,
            new=status.value,
            incarnation=incarnation,
            reason=reason,
        )
        return _event(old, status, peer, incarnation)


def _event(old: MemberStatus | None, new: MemberStatus, peer: Peer, incarnation: int) -> MembershipEvent | None:
    if new is ALIVE:
        return MemberAlive(peer, incarnation) if old is SUSPECT else MemberJoined(peer, incarnation)
    if new is SUSPECT:
        return MemberSuspected(peer, incarnation)
    if new is DEAD:
        return MemberDied(peer, incarnation)
    return MemberLeft(peer, incarnation)

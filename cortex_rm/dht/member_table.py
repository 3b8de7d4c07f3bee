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
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from twisted.logger import Logger

from cortex_rm.dht.peer import Peer
from cortex_rm.dht.swim_messages import MemberStatus

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


class MemberTable:
    """The members we heard of (never ourselves), keyed by ring id, with a count of the live ones."""

    def __init__(self, me: Peer) -> None:
        self.me = me
        self._members: dict[int, Member] = {}
        self._live = 0

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

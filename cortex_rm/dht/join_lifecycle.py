"""A ring node's membership lifecycle: alone, joining, member, left.

The Chord core (``chord.py``) moves through these states; the table makes every
legal move explicit, and an event the table neither handles nor declares ignorable
raises ``IllegalTransition`` (a bug to surface, not a silent no-op).
"""

from __future__ import annotations

import enum

from cortex_rm.yarn.transitions import TransitionTable


class RingState(enum.Enum):
    """Where a node stands with respect to the ring."""

    ALONE = "alone"  # a ring of one: its own successor (new, or every peer gone)
    JOINING = "joining"  # a lookup of our id through an introducer is under way
    MEMBER = "member"  # on a ring with others: has a successor that is not itself
    LEFT = "left"  # left gracefully; answers nothing until it joins again


class RingEvent(enum.Enum):
    """What moves a node between ``RingState``s."""

    JOIN = "join"  # join(introducer) called
    JOINED = "joined"  # the join lookup answered with our successor
    JOIN_FAILED = "join-failed"  # the join lookup did not end
    NOTIFIED = "notified"  # a node alone learned of a peer (notified by it, or told by membership)
    LOST_ALL = "lost-all"  # every known peer was forgotten
    LEAVE = "leave"  # leave() called


JOIN_LIFECYCLE: TransitionTable[RingState, RingEvent] = TransitionTable(
    "ring membership",
    {
        (RingState.ALONE, RingEvent.JOIN): RingState.JOINING,
        (RingState.ALONE, RingEvent.NOTIFIED): RingState.MEMBER,
        (RingState.ALONE, RingEvent.LEAVE): RingState.LEFT,
        (RingState.JOINING, RingEvent.JOIN): RingState.JOINING,  # another introducer
        (RingState.JOINING, RingEvent.JOINED): RingState.MEMBER,
        (RingState.JOINING, RingEvent.JOIN_FAILED): RingState.ALONE,
        (RingState.JOINING, RingEvent.LEAVE): RingState.LEFT,
        (RingState.MEMBER, RingEvent.JOIN): RingState.JOINING,  # rejoin (e.g. after a partition)
        (RingState.MEMBER, RingEvent.LOST_ALL): RingState.ALONE,
        (RingState.MEMBER, RingEvent.LEAVE): RingState.LEFT,
        (RingState.LEFT, RingEvent.JOIN): RingState.JOINING,
    },
    ignored=[
        (RingState.ALONE, RingEvent.LOST_ALL),  # nothing to lose
        (RingState.JOINING, RingEvent.NOTIFIED),  # the join's answer decides
        (RingState.JOINING, RingEvent.LOST_ALL),  # joining knows no peers
        (RingState.MEMBER, RingEvent.NOTIFIED),  # already has a successor
        (RingState.LEFT, RingEvent.NOTIFIED),
        (RingState.LEFT, RingEvent.LOST_ALL),
        (RingState.LEFT, RingEvent.LEAVE),
    ],
)

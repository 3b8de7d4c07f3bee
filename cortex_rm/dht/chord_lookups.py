"""Lookups of the Chord core in flight: the outcomes a caller receives and the requests behind them.

``ChordNode`` (``chord.py``) returns ``LookupDone``, ``Joined`` and ``JoinFailed``
among its actions.  It keeps what it waits for in ``RequestsInFlight``: every
``Lookup`` under way (a caller's, its own join, or a finger refresh) and every
request it sent (a lookup's ``FindSuccessor`` hop, or a maintenance ``GetNeighbours``
or ``Ping``) as a ``PendingRequest``.  A request ends when the peer it went to
answers (``answered``) or its deadline passes (``overdue``); a lookup ends when the
core finishes it or drops everything (``abandon``, on join and leave).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

from cortex_rm.dht.chord_messages import ChordMessage
from cortex_rm.dht.envelope import Send
from cortex_rm.dht.peer import Peer


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

USER, JOIN, FINGER = "user", "join", "finger"
"""What a ``Lookup`` is for: a caller's lookup, our join, or finger ``finger_index``."""


@dataclass
class Lookup:
    """An iterative lookup of ``key`` under way, ``hops`` requests so far."""

    lookup_id: int
    key: int
    purpose: str
    finger_index: int = -1
    hops: int = 0
    introducer: Peer | None = None


@dataclass
class PendingRequest:
    """A request sent to ``to``, answered before ``deadline`` or failed; ``lookup_id``: the lookup it is a hop of."""

    to: Peer
    deadline: float
    message: ChordMessage
    lookup_id: int | None = None


class RequestsInFlight:
    """The lookups a Chord node has under way and the requests it waits on, ids from one counter.

    Request and lookup ids share the counter, so no two things in flight have the
    same id, and a reply to a request dropped by ``abandon`` matches nothing later.
    """

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._pending: dict[int, PendingRequest] = {}
        self._lookups: dict[int, Lookup] = {}

    def start(self, key: int, purpose: str, *, finger_index: int = -1, introducer: Peer | None = None) -> Lookup:
        """A new lookup of ``key`` for ``purpose``, under way until ``finish`` or ``abandon``."""
        lookup = Lookup(next(self._ids), key, purpose, finger_index=finger_index, introducer=introducer)
        self._lookups[lookup.lookup_id] = lookup
        return lookup

    def request(
        self, to: Peer, make: Callable[[int], ChordMessage], deadline: float, lookup: Lookup | None = None
    ) -> Send:
        """Send ``make(request_id)`` to ``to`` and wait for its answer until ``deadline`` (a hop of ``lookup``)."""
        request_id = next(self._ids)
        message = make(request_id)
        self._pending[request_id] = PendingRequest(to, deadline, message, lookup.lookup_id if lookup else None)
        return Send(to, message)

    def answered(self, sender: Peer, request_id: int) -> PendingRequest | None:
        """The request that a reply from ``sender`` answers, no longer waited for; None if it answers none.

        A reply counts only for a request still waited for, and only from the peer it went to.
        """
        pending = self._pending.get(request_id)
        if pending is None or pending.to != sender:
            return None
        del self._pending[request_id]
        return pending

    def overdue(self, now: float) -> list[PendingRequest]:
        """Stop waiting for every request whose deadline has passed; they come in the order they were sent."""
        due = sorted(request_id for request_id, pending in self._pending.items() if pending.deadline <= now)
        return [self._pending.pop(request_id) for request_id in due]

    def lookup_of(self, pending: PendingRequest) -> Lookup | None:
        """The lookup under way that ``pending`` is a hop of, if any."""
        return self._lookups.get(pending.lookup_id) if pending.lookup_id is not None else None

    def finish(self, lookup: Lookup) -> None:
        """``lookup`` has ended (its outcome is the core's to report)."""
        del self._lookups[lookup.lookup_id]

    def abandon(self) -> list[LookupDone]:
        """Drop everything in flight: callers' lookups end as failed (returned), the rest silently.

        Late replies to the dropped requests then match nothing and are ignored.
        """
        lookups = self._lookups.values()
        failed = [LookupDone(old.lookup_id, old.key, None, old.hops) for old in lookups if old.purpose == USER]
        self._lookups.clear()
        self._pending.clear()
        return failed

"""Who was whose probing ring neighbour, and when: the facts that decide whose attestations count.

A witness's word about a subject counts only for the instants at which the ring
made it one of the subject's probers (``payouts.py`` clips to them), and the
number of probers a subject had at an instant sets how many witnesses it needs
then.  ``NeighbourHistory`` is that seam: the payout rules ask it, per subject
and period, for every witness and the union of instants it probed the subject.

It must come from the ring's membership -- facts that anyone recomputing a
payout can take from the log -- never from a witness's own say-so.
``ring_neighbour_table`` derives it from membership intervals alone, by the
rule the ring itself follows (``dht/chord.py``, ``dht/membership.py``): a member
``W`` probes ``S`` while ``S`` is one of the ``successors`` live members after
``W`` on the ring (``W``'s successor list) or the live member right before ``W``
(its predecessor).  So a live subject among ``n >= 3`` live members has at least
two probers, and a subject has a single prober only when the ring has two members.
Fingers are left out on purpose: which member a finger points to depends on when
each member last refreshed it, which the log does not hold; a witness should only
attest the successors and predecessor it probes.

``NeighbourTable`` is the in-memory form, filled from those intervals (or by hand
in tests).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Protocol

from sortedcontainers import SortedList

from cortex_rm.accounting.intervals import Interval, clipped, merged


class NeighbourHistory(Protocol):
    """The instants at which each witness was one of a subject's probing ring neighbours."""

    def witnesses_of(self, subject: int, start_ms: int, end_ms: int) -> Mapping[int, Sequence[Interval]]:
        """Each ring id that probed ``subject`` at some instant of ``[start_ms, end_ms)``, with those instants.

        The value for a witness is a union (``intervals.py``) clipped to the
        range; witnesses that never probed the subject then are absent.
        """
        ...


class NeighbourTable:
    """A ``NeighbourHistory`` held in memory: (witness, subject) -> the instants it probed."""

    def __init__(self) -> None:
        self._by_subject: dict[int, dict[int, list[Interval]]] = {}

    def add(self, witness: int, subject: int, start_ms: int, end_ms: int) -> None:
        """``witness`` probed ``subject`` throughout ``[start_ms, end_ms)``."""
        if witness == subject:
            raise ValueError("a member is never its own probing neighbour")
        if start_ms >= end_ms:
            return
        spans = self._by_subject.setdefault(subject, {}).setdefault(witness, [])
        if spans and start_ms <= spans[-1][1] and start_ms >= spans[-1][0]:
            spans[-1] = (spans[-1][0], max(end_ms, spans[-1][1]))
        else:
            spans.append((start_ms, end_ms))

    def witnesses_of(self, subject: int, start_ms: int, end_ms: int) -> dict[int, list[Interval]]:
        """See ``NeighbourHistory.witnesses_of``."""
        result = {}
        for witness, spans in self._by_subject.get(subject, {}).items():
            inside = clipped(merged(spans), start_ms, end_ms)
            if inside:
                result[witness] = inside
        return result

    def relations(self) -> Iterator[tuple[int, int, list[Interval]]]:
        """Every (witness, subject, union of instants) held."""
        for subject, witnesses in self._by_subject.items():
            for witness, spans in witnesses.items():
                yield witness, subject, merged(spans)


def _probers(ring: SortedList, subject: int, successors: int) -> set[int]:
    """The live members that probe ``subject`` on ``ring`` (sorted live ids, ``subject`` among them)."""
    n = len(ring)
    i = ring.index(subject)
    result = {ring[(i - k) % n] for k in range(1, min(successors, n - 1) + 1)}  # S in their successor lists
    if n > 1:
        result.add(ring[(i + 1) % n])  # S is its predecessor
    return result


def _near(ring: SortedList, member: int, successors: int) -> list[int]:
    """The members whose probers may change when ``member`` (on ``ring``) joins or leaves."""
    n = len(ring)
    i = ring.index(member)
    return [ring[(i + k) % n] for k in range(-1, min(successors, n - 1) + 1)]


def ring_neighbour_table(memberships: Mapping[int, Iterable[Interval]], successors: int = 8) -> NeighbourTable:
    """Who probed whom, given when each ring id was a live member (see the module doc).

    ``memberships`` maps each ring id to the intervals it was a live member
    (overlapping ones are merged).  ``successors`` is the successor-list length
    (``RingConfig.successor_list_length``).  Changes at one instant are applied
    together, then the probers of every member near a change are recomputed.
    """
    if successors < 1:
        raise ValueError(f"successors must be at least 1, not {successors}")
    changes: list[tuple[int, int, int]] = []  # (time, 0 leave / 1 join, member)
    for member, spans in memberships.items():
        for start, end in merged(spans):
            changes.append((start, 1, member))
            changes.append((end, 0, member))
    changes.sort()
    table = NeighbourTable()
    ring = SortedList()
    probers: dict[int, set[int]] = {}
    since: dict[tuple[int, int], int] = {}  # (witness, subject) -> start of the current relation
    i = 0
    while i < len(changes):
        now = changes[i][0]
        touched: set[int] = set()
        while i < len(changes) and changes[i][0] == now:
            _, joins, member = changes[i]
            i += 1
            if joins:
                ring.add(member)
                touched.update(_near(ring, member, successors))
            else:
                touched.update(_near(ring, member, successors))
                ring.remove(member)
        for subject in touched:
            before = probers.get(subject, set())
            after = _probers(ring, subject, successors) if subject in ring else set()
            for witness in before - after:
                table.add(witness, subject, since.pop((witness, subject)), now)
            for witness in after - before:
                since[(witness, subject)] = now
            if after:
                probers[subject] = after
            else:
                probers.pop(subject, None)
    return table

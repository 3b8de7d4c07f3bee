"""Time intervals of uptime: union, clipping, difference and quorum coverage, as pure functions.

Every interval here is half-open, ``[start, end)`` in integer milliseconds with
``start < end``; a *union* is a list of such intervals sorted by start, pairwise
disjoint and not touching (``[0, 5)`` and ``[5, 9)`` are one interval, ``[0, 9)``).
Everything the accounting computes about time -- what a witness saw, what a
ring relation allowed, what a node is paid for -- is a union, so these functions
are the only place that reasons about overlaps.

``quorum_coverage`` is the payout rule's core: the instants at which at least
``min(quorum, eligible(t))`` of the attested unions cover ``t``, where
``eligible(t)`` counts the unions of the witnesses that *could* have attested at
``t`` (the subject's ring neighbours then).  It is one sweep over the sorted ends
of all intervals: ``O(n log n)`` for ``n`` intervals.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence

Interval = tuple[int, int]
"""``(start_ms, end_ms)``, half-open, ``start < end``."""


def _start_of(interval: Interval) -> int:
    return interval[0]


def merged(intervals: Iterable[Interval]) -> list[Interval]:
    """The union of ``intervals`` (any order, overlapping or empty ones allowed) as a sorted union."""
    result: list[Interval] = []
    for start, end in sorted(i for i in intervals if i[0] < i[1]):
        if result and start <= result[-1][1]:
            if end > result[-1][1]:
                result[-1] = (result[-1][0], end)
        else:
            result.append((start, end))
    return result


def total(union: Iterable[Interval]) -> int:
    """The length of a union (of disjoint intervals) in milliseconds."""
    return sum(end - start for start, end in union)


def clipped(union: Sequence[Interval], low: int, high: int) -> list[Interval]:
    """The part of ``union`` inside ``[low, high)``."""
    if low >= high:
        return []
    first = max(0, bisect.bisect_right(union, low, key=_start_of) - 1)  # the last starting at or before low
    result: list[Interval] = []
    for start, end in union[first:]:
        if start >= high:
            break
        start, end = max(start, low), min(end, high)
        if start < end:
            result.append((start, end))
    return result


def intersection(a: Sequence[Interval], b: Sequence[Interval]) -> list[Interval]:
    """The instants in both unions."""
    result: list[Interval] = []
    i = j = 0
    while i < len(a) and j < len(b):
        start, end = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if start < end:
            result.append((start, end))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return result


def difference(a: Sequence[Interval], b: Sequence[Interval]) -> list[Interval]:
    """The instants in union ``a`` and not in union ``b``."""
    result: list[Interval] = []
    j = 0
    for start, end in a:
        while j < len(b) and b[j][1] <= start:
            j += 1
        k = j
        while start < end and k < len(b) and b[k][0] < end:
            if b[k][0] > start:
                result.append((start, b[k][0]))
            start = max(start, b[k][1])
            k += 1
        if start < end:
            result.append((start, end))
    return result


class IntervalUnion:
    """A union that grows: ``add`` returns how many milliseconds were new.

    The common case -- intervals that arrive in time order, each starting at or
    after the end of the one before (what an honest witness attests) -- costs
    constant time; anything else costs a search and a splice.
    """

    __slots__ = ("intervals",)

    def __init__(self) -> None:
        self.intervals: list[Interval] = []

    def add(self, start: int, end: int) -> int:
        """Add ``[start, end)``; the milliseconds it covered that the union did not."""
        if start >= end:
            return 0
        spans = self.intervals
        if not spans or start > spans[-1][1]:
            spans.append((start, end))
            return end - start
        last_start, last_end = spans[-1]
        if start >= last_start:  # overlaps or touches the last interval only
            if end <= last_end:
                return 0
            spans[-1] = (last_start, end)
            return end - max(start, last_end)
        lo = bisect.bisect_left(spans, start, key=_start_of)  # the first starting at or after start...
        if lo > 0 and spans[lo - 1][1] >= start:  # ...or the one before, if it reaches start
            lo -= 1
        hi = bisect.bisect_right(spans, end, key=_start_of)  # spans[lo:hi] overlap or touch [start, end]
        old = total(spans[lo:hi])
        new_start = min(start, spans[lo][0]) if lo < hi else start
        new_end = max(end, spans[hi - 1][1]) if lo < hi else end
        spans[lo:hi] = [(new_start, new_end)]
        return (new_end - new_start) - old

    def total(self) -> int:
        """The union's length in milliseconds."""
        return total(self.intervals)


def quorum_coverage(
    attested: Iterable[Sequence[Interval]], eligible: Iterable[Sequence[Interval]], quorum: int
) -> list[Interval]:
    """The instants covered by at least ``min(quorum, e(t))`` unions of ``attested`` (and by one at least).

    ``e(t)`` is the number of unions of ``eligible`` that cover ``t``.  Each argument
    is a collection of unions (one per witness); an instant that no eligible union
    covers is never in the result, even when an attested union covers it.
    """
    if quorum < 1:
        raise ValueError(f"quorum must be at least 1, not {quorum}")
    events: list[tuple[int, int, int]] = []  # (time, attested delta, eligible delta)
    for union in attested:
        for start, end in union:
            events.append((start, 1, 0))
            events.append((end, -1, 0))
    for union in eligible:
        for start, end in union:
            events.append((start, 0, 1))
            events.append((end, 0, -1))
    events.sort()
    result: list[Interval] = []
    count = able = 0
    open_at: int | None = None
    i = 0
    while i < len(events):
        now = events[i][0]
        while i < len(events) and events[i][0] == now:  # every change at one instant, then decide
            count += events[i][1]
            able += events[i][2]
            i += 1
        covered = able > 0 and count >= max(1, min(quorum, able))
        if covered and open_at is None:
            open_at = now
        elif not covered and open_at is not None:
            if result and result[-1][1] == open_at:
                result[-1] = (result[-1][0], now)
            else:
                result.append((open_at, now))
            open_at = None
    return result

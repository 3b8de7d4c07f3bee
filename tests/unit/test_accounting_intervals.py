"""Interval arithmetic of the accounting: tables for the edges, hypothesis properties against point sets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cortex_rm.accounting.intervals import (
    Interval,
    IntervalUnion,
    clipped,
    difference,
    intersection,
    merged,
    quorum_coverage,
    total,
)

# Intervals on a small line, so that every instant can be checked one by one.
LINE = 60
INTERVALS = st.lists(st.tuples(st.integers(0, LINE), st.integers(0, LINE)), max_size=8)
UNIONS = INTERVALS.map(merged)


def points(intervals: list[Interval]) -> set[int]:
    """The integer instants a collection of half-open intervals covers."""
    return {t for start, end in intervals for t in range(start, end)}


def is_union(intervals: list[Interval]) -> bool:
    """Sorted, non-empty, disjoint and not touching."""
    return all(a < b for a, b in intervals) and all(b1 < a2 for (_, b1), (a2, _) in zip(intervals, intervals[1:]))


@pytest.mark.parametrize(
    ("given_intervals", "expected"),
    [
        ([], []),
        ([(5, 5)], []),  # empty
        ([(0, 5), (5, 9)], [(0, 9)]),  # touching ones are one
        ([(4, 8), (0, 5), (20, 30), (25, 26)], [(0, 8), (20, 30)]),
        ([(3, 1)], []),  # backwards: empty
    ],
)
def test_merged_joins_overlapping_and_touching_intervals(given_intervals: list[Interval], expected: list[Interval]) -> None:
    """merged sorts, drops empty intervals and joins those that overlap or touch."""
    assert merged(given_intervals) == expected


def test_clip_intersection_and_difference_at_the_edges() -> None:
    """Clipping keeps the inside of a window; difference cuts holes; intersection keeps common parts."""
    union = [(0, 10), (20, 30), (40, 50)]
    assert clipped(union, 5, 45) == [(5, 10), (20, 30), (40, 45)]
    assert clipped(union, 10, 20) == []
    assert clipped(union, 30, 30) == []
    assert difference(union, [(5, 25), (45, 60)]) == [(0, 5), (25, 30), (40, 45)]
    assert intersection(union, [(5, 25), (45, 60)]) == [(5, 10), (20, 25), (45, 50)]


@given(INTERVALS)
def test_merged_is_the_union_of_its_input(intervals: list[Interval]) -> None:
    """merged covers exactly the instants of its input, as a proper union, and merging again changes nothing."""
    result = merged(intervals)
    assert is_union(result)
    assert points(result) == points(intervals)
    assert merged(result) == result
    assert total(result) == len(points(intervals))


@given(UNIONS, UNIONS, st.integers(0, LINE), st.integers(0, LINE))
def test_set_operations_match_point_sets(a: list[Interval], b: list[Interval], low: int, high: int) -> None:
    """clipped, intersection and difference agree with the same operations on sets of instants."""
    window = set(range(low, high))
    for result, expected in (
        (clipped(a, low, high), points(a) & window),
        (intersection(a, b), points(a) & points(b)),
        (difference(a, b), points(a) - points(b)),
    ):
        assert is_union(result)
        assert points(result) == expected


@given(INTERVALS)
def test_interval_union_counts_only_new_instants(intervals: list[Interval]) -> None:
    """Adding intervals in any order: each add reports the instants it covered first, the union stays proper."""
    union = IntervalUnion()
    seen: set[int] = set()
    for start, end in intervals:
        new = points([(start, end)]) - seen
        assert union.add(start, end) == len(new)
        seen |= new
        assert is_union(union.intervals)
        assert points(union.intervals) == seen
    assert union.total() == len(seen)


@given(st.lists(UNIONS, max_size=5), st.lists(UNIONS, max_size=5), st.integers(1, 4))
def test_quorum_coverage_matches_counting_at_each_instant(
    attested: list[list[Interval]], eligible: list[list[Interval]], quorum: int
) -> None:
    """An instant is covered iff some union of eligible covers it and min(quorum, eligible there) attested ones do."""
    result = quorum_coverage(attested, eligible, quorum)
    assert is_union(result)
    expected = set()
    for t in range(LINE):
        able = sum(t in points(u) for u in eligible)
        count = sum(t in points(u) for u in attested)
        if able and count >= max(1, min(quorum, able)):
            expected.add(t)
    assert points(result) == expected


def test_quorum_lowers_to_the_eligible_count() -> None:
    """Where only one witness could attest, one suffices; where two could, one does not."""
    lone = [[(0, 100)]]
    assert quorum_coverage(lone, [[(0, 50)]], quorum=2) == [(0, 50)]
    assert quorum_coverage(lone, [[(0, 100)], [(50, 100)]], quorum=2) == [(0, 50)]
    with pytest.raises(ValueError):
        quorum_coverage(lone, lone, quorum=0)

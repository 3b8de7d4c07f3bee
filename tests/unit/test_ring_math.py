"""Ring arithmetic: clockwise distance, intervals with wrap-around, finger starts, key ids."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cortex_rm.dht.ring_math import (
    RING_SIZE,
    M,
    distance,
    finger_start,
    format_id,
    in_interval,
    key_id,
)

ids = st.integers(min_value=0, max_value=RING_SIZE - 1)
# Small ids near the edges and around zero find wrap-around bugs faster than uniform ones.
edge_ids = st.one_of(ids, st.integers(0, 16), st.integers(RING_SIZE - 16, RING_SIZE - 1))
TOP = RING_SIZE - 1


@pytest.mark.parametrize(
    ("x", "a", "b", "left", "right", "expected"),
    [
        # plain arcs, a < b
        (5, 1, 10, False, False, True),
        (1, 1, 10, False, False, False),
        (10, 1, 10, False, False, False),
        (1, 1, 10, True, False, True),
        (10, 1, 10, False, True, True),
        (0, 1, 10, True, True, False),
        (11, 1, 10, True, True, False),
        # wrap-around arcs, b < a
        (0, TOP - 1, 2, False, False, True),
        (TOP, TOP - 1, 2, False, False, True),
        (1, TOP - 1, 2, False, False, True),
        (2, TOP - 1, 2, False, False, False),
        (2, TOP - 1, 2, False, True, True),
        (TOP - 1, TOP - 1, 2, False, False, False),
        (TOP - 1, TOP - 1, 2, True, False, True),
        (5, TOP - 1, 2, True, True, False),
        # adjacent ends: the open arc is empty, closing an end adds just that end
        (4, 3, 4, False, False, False),
        (3, 3, 4, False, False, False),
        (4, 3, 4, False, True, True),
        # full circle a == b: open is everything but a, any closed end is everything
        (7, 7, 7, False, False, False),
        (8, 7, 7, False, False, True),
        (6, 7, 7, False, False, True),
        (7, 7, 7, False, True, True),
        (7, 7, 7, True, False, True),
        (7, 7, 7, True, True, True),
    ],
)
def test_in_interval_table(x: int, a: int, b: int, left: bool, right: bool, expected: bool) -> None:
    """Each listed point falls in (or out of) the listed arc, including wrap-around and a == b."""
    assert in_interval(x, a, b, include_left=left, include_right=right) is expected


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [(0, 0, 0), (1, 5, 4), (5, 1, RING_SIZE - 4), (TOP, 0, 1), (0, TOP, TOP)],
)
def test_distance_table(a: int, b: int, expected: int) -> None:
    """The clockwise distance wraps through zero."""
    assert distance(a, b) == expected


def test_finger_starts_of_zero_and_of_the_top() -> None:
    """Finger i of node 0 starts at 2**i; finger 0 of the last id wraps to 0."""
    assert [finger_start(0, i) for i in range(4)] == [1, 2, 4, 8]
    assert finger_start(TOP, 0) == 0
    assert finger_start(TOP, M - 1) == (1 << (M - 1)) - 1


@pytest.mark.parametrize("i", [-1, M])
def test_finger_index_out_of_range_is_refused(i: int) -> None:
    """A finger index outside 0..M-1 is an error, not a silent modulo."""
    with pytest.raises(ValueError):
        finger_start(0, i)


def test_key_id_is_sha1_of_the_utf8_bytes() -> None:
    """Text and its UTF-8 bytes hash to the same point: SHA-1 as a big-endian integer."""
    expected = int.from_bytes(hashlib.sha1(b"cortex:resourcemanager").digest(), "big")
    assert key_id("cortex:resourcemanager") == expected
    assert key_id(b"cortex:resourcemanager") == expected
    assert 0 <= key_id("é") < RING_SIZE
    assert format_id(key_id("")) == hashlib.sha1(b"").hexdigest()


@given(edge_ids, edge_ids, edge_ids)
def test_every_other_point_is_in_exactly_one_of_the_two_arcs(x: int, a: int, b: int) -> None:
    """For a != b, every x other than a and b is in exactly one of (a, b) and (b, a)."""
    if a == b or x in (a, b):
        return
    assert in_interval(x, a, b) != in_interval(x, b, a)


@given(edge_ids, edge_ids, edge_ids, st.booleans(), st.booleans())
def test_in_interval_agrees_with_distances(x: int, a: int, b: int, left: bool, right: bool) -> None:
    """For a != b, x is in the arc iff its distance from a is inside the arc's span."""
    if a == b:
        return
    d, span = distance(a, x), distance(a, b)
    lower_ok = d > 0 or left
    upper_ok = d < span or (d == span and right)
    assert in_interval(x, a, b, include_left=left, include_right=right) == (lower_ok and upper_ok and d <= span)


@given(edge_ids, edge_ids)
def test_the_ends_of_an_arc_follow_the_flags(a: int, b: int) -> None:
    """An arc holds its left end iff include_left (or it is the full circle with a closed end)."""
    if a == b:
        return
    assert in_interval(a, a, b) is False
    assert in_interval(b, a, b) is False
    assert in_interval(a, a, b, include_left=True) is True
    assert in_interval(b, a, b, include_right=True) is True


@given(edge_ids, edge_ids)
def test_distances_both_ways_sum_to_the_circle(a: int, b: int) -> None:
    """Going a→b then b→a is once round the circle (or nowhere when a == b)."""
    assert distance(a, b) + distance(b, a) == (0 if a == b else RING_SIZE)


@given(edge_ids)
def test_finger_starts_are_increasing_in_distance(n: int) -> None:
    """Finger i starts 2**i clockwise of n, so the starts get strictly farther from n."""
    dists = [distance(n, finger_start(n, i)) for i in range(M)]
    assert dists == [1 << i for i in range(M)]
    assert all(in_interval(finger_start(n, i), n, n) for i in range(M))


@given(edge_ids, edge_ids)
def test_the_full_circle_holds_everything_but_its_point(x: int, a: int) -> None:
    """(a, a) is every point but a; (a, a] is every point."""
    assert in_interval(x, a, a) == (x != a)
    assert in_interval(x, a, a, include_right=True)

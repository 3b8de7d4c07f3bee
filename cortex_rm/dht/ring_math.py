"""Arithmetic on the Chord identifier circle: ids are integers modulo 2**160.

Every ring id (``internal.identity.ring_id_of``: the SHA-1 of a node's key) and every key (``key_id``) is a point on a
circle of ``RING_SIZE = 2**M`` points, ``M = 160`` (SHA-1).  Chord reasons about
*clockwise* intervals on that circle; these pure functions are the only place that
does the modular arithmetic, so the protocol code (``chord.py``) never writes ``%``.
"""

from __future__ import annotations

import hashlib

RING_ID_BITS = 160  # SHA-1's output: the width of ring ids and keys
M = RING_ID_BITS
RING_SIZE = 1 << M


def distance(a: int, b: int) -> int:
    """The clockwise distance from ``a`` to ``b``: how far one walks from a to reach b.

    ``distance(a, a) == 0`` and ``distance(a, b) + distance(b, a) == RING_SIZE`` for
    ``a != b``.
    """
    return (b - a) % RING_SIZE


def in_interval(
    x: int, a: int, b: int, *, include_left: bool = False, include_right: bool = False
) -> bool:
    """Whether ``x`` lies on the clockwise arc from ``a`` to ``b``.

    The arc is open by default, ``(a, b)``; ``include_left``/``include_right`` close
    either end, so Chord's ``x in (n, successor]`` is
    ``in_interval(x, n, successor, include_right=True)``.  The arc wraps around zero
    when ``b`` is at or before ``a``.

    The full circle, ``a == b``: the arc from a back to itself goes all the way round.
    ``(a, a)`` is every point except ``a``; ``(a, a]`` and ``[a, a)`` and ``[a, a]``
    are every point.  This is what Chord needs when a node is alone on the ring (its
    own successor): every key is in ``(n, n]``, so it owns them all.
    """
    if a == b:
        return x != a or include_left or include_right
    d = distance(a, x)
    span = distance(a, b)
    if d == 0:
        return include_left
    if d == span:
        return include_right
    return d < span


def finger_start(n: int, i: int) -> int:
    """The start of node ``n``'s ``i``-th finger, ``(n + 2**i) mod 2**M`` for ``0 <= i < M``.

    Finger i points at ``successor(finger_start(n, i))``; finger 0 is the successor.
    """
    if not 0 <= i < M:
        raise ValueError(f"finger index {i} is outside 0..{M - 1}")
    return (n + (1 << i)) % RING_SIZE


def key_id(key: str | bytes) -> int:
    """The point of a key on the circle: SHA-1 of its bytes (UTF-8 for text), big-endian.

    The same hash as a node's ring id, so names and nodes share one circle.
    """
    data = key.encode("utf-8") if isinstance(key, str) else key
    return int.from_bytes(hashlib.sha1(data).digest(), "big")


def format_id(x: int) -> str:
    """A ring id as 40 lower-case hex digits (the form used in logs and certificates)."""
    return f"{x:040x}"

"""What every fuzzer of ``tests/fuzz`` shares: a deterministic, bounded hypothesis profile,
byte mutations of valid encodings, and a watch on logged failures.

The profile is CI's: ``derandomize=True`` (the examples depend only on the test's
source, so a run is repeatable), no example database (nothing written, nothing
replayed from an earlier run), no deadline (a slow shared machine is no failure;
nothing here asserts on wall-clock time).  ``CORTEX_FUZZ_SCALE=20`` multiplies every
fuzzer's example count for a longer run by hand.

A decoder's property is always the same shape: bad input yields the decoder's own
error (or a protocol-level error reply), never another exception, and never an
unbounded buffer.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

_SCALE = max(1, int(os.environ.get("CORTEX_FUZZ_SCALE", "1")))


def fuzz_settings(max_examples: int) -> settings:
    """The fuzz profile with ``max_examples`` (times ``CORTEX_FUZZ_SCALE``)."""
    return settings(
        max_examples=max_examples * _SCALE,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


# --- mutations of a valid encoding ------------------------------------------------------------


def _flip(data: bytes, position: int, value: int) -> bytes:
    if not data:
        return bytes([value])
    i = position % len(data)
    return data[:i] + bytes([value]) + data[i + 1 :]


def _insert(data: bytes, position: int, chunk: bytes) -> bytes:
    i = position % (len(data) + 1)
    return data[:i] + chunk + data[i:]


def _delete(data: bytes, position: int, count: int) -> bytes:
    if not data:
        return data
    i = position % len(data)
    return data[:i] + data[i + count :]


def _truncate(data: bytes, position: int, _: int) -> bytes:
    return data[: position % (len(data) + 1)]


# A 32-bit length or count field set to an extreme: the usual way to make a decoder allocate.
_EXTREMES = (b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff", b"\xff\xff\xff\xff", b"\x80\x00\x00\x00", b"\xff" * 10)


def _overwrite_extreme(data: bytes, position: int, which: int) -> bytes:
    chunk = _EXTREMES[which % len(_EXTREMES)]
    if not data:
        return chunk
    i = position % len(data)
    return data[:i] + chunk + data[i + len(chunk) :]


_MUTATION = st.one_of(
    st.tuples(st.just(_flip), st.integers(0, 1 << 16), st.integers(0, 255)),
    st.tuples(st.just(_insert), st.integers(0, 1 << 16), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just(_delete), st.integers(0, 1 << 16), st.integers(1, 8)),
    st.tuples(st.just(_truncate), st.integers(0, 1 << 16), st.just(0)),
    st.tuples(st.just(_overwrite_extreme), st.integers(0, 1 << 16), st.integers(0, len(_EXTREMES) - 1)),
)


def mutated(valid: st.SearchStrategy[bytes], max_mutations: int = 4) -> st.SearchStrategy[bytes]:
    """Encodings drawn from ``valid`` with 1..``max_mutations`` byte-level mutations applied
    (a byte set, bytes inserted or deleted, the tail cut, a 4-byte extreme written over)."""

    def apply(data: bytes, mutations: list[tuple[Callable[[bytes, int, Any], bytes], int, Any]]) -> bytes:
        for mutation, position, argument in mutations:
            data = mutation(data, position, argument)
        return data

    return st.builds(apply, valid, st.lists(_MUTATION, min_size=1, max_size=max_mutations))


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at ``cuts`` (positions taken modulo its length): how TCP may deliver it."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


# --- logged failures ----------------------------------------------------------------------------


@contextmanager
def failures_logged() -> Iterator[list[str]]:
    """Collect, while the block runs, every failure or critical event logged through Twisted's
    global publisher (what the conftest fixture fails a test on, but per example)."""
    seen: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_failure") is not None or event.get("log_level") is LogLevel.critical:
            failure = event.get("log_failure")
            text = formatEvent(event)
            seen.append(text + ("\n" + failure.getTraceback() if failure is not None else ""))

    globalLogPublisher.addObserver(observe)
    try:
        yield seen
    finally:
        globalLogPublisher.removeObserver(observe)

"""The local record store: the merge rule (properties), size bounds, batching."""

from __future__ import annotations

from random import Random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cortex_rm.dht.kv_messages import Record
from cortex_rm.dht.record_store import (
    MAX_KEY_LENGTH,
    MAX_VALUE_BYTES,
    RecordStore,
    RecordTooLarge,
    check_record,
    digest_batches,
    merge,
    newer,
    record_batches,
    record_error,
    record_order,
)

# Few versions, writers and values, so ties on version (and on writer) are frequent.
records_of_one_key = st.builds(
    Record,
    key=st.just("k"),
    value=st.binary(max_size=3),
    version=st.integers(0, 4),
    writer=st.integers(0, 3),
)
maybe_records = st.none() | records_of_one_key


@given(maybe_records, maybe_records)
def test_merge_is_commutative(a: Record | None, b: Record | None) -> None:
    """Whichever order two replicas see two records in, they keep the same one."""
    assert merge(a, b) == merge(b, a)


@given(maybe_records, maybe_records, maybe_records)
def test_merge_is_associative(a: Record | None, b: Record | None, c: Record | None) -> None:
    """Merging in any grouping gives the same record (so gossip order does not matter)."""
    assert merge(merge(a, b), c) == merge(a, merge(b, c))


@given(maybe_records)
def test_merge_is_idempotent(a: Record | None) -> None:
    """Receiving a record we already hold changes nothing."""
    assert merge(a, a) == a


@given(st.lists(records_of_one_key, min_size=1))
def test_the_newest_record_wins(records: list[Record]) -> None:
    """Merging any set of records gives the greatest ``(version, writer, value)``: the highest version wins."""
    result = None
    for record in records:
        result = merge(result, record)
    assert result == max(records, key=record_order)
    assert result is not None and result.version == max(r.version for r in records)


@given(st.lists(records_of_one_key, min_size=1), st.randoms())
def test_a_store_ends_with_the_same_record_whatever_the_delivery_order(records: list[Record], rnd: Random) -> None:
    """Two stores fed the same records in different orders (with repeats) hold the same record."""
    shuffled = records + records[: len(records) // 2]
    rnd.shuffle(shuffled)
    assert RecordStore(records).get("k") == RecordStore(shuffled).get("k")


def test_an_older_record_never_replaces_a_newer_one() -> None:
    """keep() refuses an older version and an equal record; it takes a newer one."""
    store = RecordStore()
    assert store.keep(Record("k", b"v5", 5, 1))
    assert not store.keep(Record("k", b"v4", 4, 9))
    assert not store.keep(Record("k", b"v5", 5, 1))
    assert store.keep(Record("k", b"v5b", 5, 2))  # same version, higher writer
    assert store.get("k") == Record("k", b"v5b", 5, 2)
    assert newer(Record("k", b"", 0, 0), None)


def test_merging_records_of_different_keys_is_an_error() -> None:
    """Records of two keys are never compared: that would be a bug in the caller."""
    with pytest.raises(ValueError):
        merge(Record("a", b"", 1, 1), Record("b", b"", 1, 1))


def test_next_version_is_the_clock_or_one_above_what_is_held() -> None:
    """An owner's version is ``max(now_ms, held + 1)``: it follows the clock and never repeats."""
    store = RecordStore()
    assert store.next_version("k", 1000) == 1000
    store.keep(Record("k", b"", 5000, 1))
    assert store.next_version("k", 1000) == 5001
    assert store.next_version("k", 9000) == 9000


def test_keys_and_values_at_the_limits_are_accepted_and_beyond_them_refused() -> None:
    """A 256-character key and a 64 KiB value are fine; one more character or byte is refused, saying why."""
    assert record_error("k" * MAX_KEY_LENGTH, b"x" * MAX_VALUE_BYTES) is None
    assert "limit is 256" in (record_error("k" * (MAX_KEY_LENGTH + 1)) or "")
    assert "limit is 65536" in (record_error("k", b"x" * (MAX_VALUE_BYTES + 1)) or "")
    assert record_error("") == "key is empty"
    with pytest.raises(RecordTooLarge, match="257 characters"):
        check_record("k" * 257)


def test_a_store_drops_records_beyond_the_bounds() -> None:
    """A record from the wire that breaks the bounds never enters the store."""
    store = RecordStore()
    assert not store.keep(Record("k", b"x" * (MAX_VALUE_BYTES + 1), 1, 1))
    assert not store.keep(Record("k" * 300, b"", 1, 1))
    assert len(store) == 0


def test_a_copied_store_is_independent() -> None:
    """copy() is what a restarted node reads back: later writes to either do not show in the other."""
    store = RecordStore([Record("k", b"1", 1, 1)])
    copy = store.copy()
    store.keep(Record("k", b"2", 2, 1))
    assert copy.get("k") == Record("k", b"1", 1, 1)


@given(st.lists(st.integers(0, 50), max_size=30), st.integers(1, 100))
def test_record_batches_keep_order_and_bound_their_bytes(sizes: list[int], max_bytes: int) -> None:
    """Batches hold every record once, in order; each is within max_bytes unless it is a single record."""
    records = [Record(f"k{i}", b"x" * size, 1, 1) for i, size in enumerate(sizes)]
    batches = record_batches(records, max_bytes)
    assert [r for batch in batches for r in batch] == records
    for batch in batches:
        assert len(batch) == 1 or sum(len(r.value) for r in batch) <= max_bytes


def test_digest_batches_cut_entries_into_bounded_messages() -> None:
    """2500 records give digests of 1024, 1024 and 452 (key, version) entries."""
    records = [Record(f"k{i:04}", b"", i, 1) for i in range(2500)]
    batches = digest_batches(records, 1024)
    assert [len(b) for b in batches] == [1024, 1024, 452]
    assert batches[0][0] == ("k0000", 0)

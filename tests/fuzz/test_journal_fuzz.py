"""The RM journal's channel (``internal/journal_codec.py``) and its core (``ha/journal.py``) under hostile input.

* ``decode_journal`` over mutated encodings of valid messages and over random ``JournalMessage``
  structs: MalformedEnvelope, or a message the codec itself re-encodes.
* ``decode_snapshot`` (the ``rm-journal-snapshot`` channel) over mutated encodings of valid chunks and
  acks, and over any bytes: MalformedEnvelope, or a message that re-encodes to the same body.
* A ``JournalNode`` fed any decodable message from any member at any time, snapshot chunks included,
  compacting after each step and installing what it received whole: it never raises, what it answers
  encodes, and its promise never goes back.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from dataclasses import replace

from cortex_rm.ha.journal import (
    SNAPSHOT_CHUNK_BYTES, Append, Appended, Entry, JournalNode, Prepare, Promise, Refused, Snapshot, SnapshotAck,
)  # fmt: skip
from cortex_rm.internal import journal_codec
from cortex_rm.internal.errors import MalformedEnvelope
from cortex_rm.internal.gen import ttypes
from tests.fuzz.fuzzing import fuzz_settings, mutated
from tests.fuzz.messages import bounded_integers, thrift_structs

MEMBERS = (0x10, 0x20, 0x30)
counts = bounded_integers(0, 2**63 - 1)
small = st.integers(0, 12)
epochs = st.tuples(st.integers(0, 6), st.sampled_from([0, *MEMBERS]))
entries = st.builds(Entry, epochs, small, st.binary(max_size=8))
messages = st.one_of(
    st.builds(Prepare, epochs, small, epochs, st.booleans()),
    st.builds(Promise, epochs, st.booleans(), st.booleans()),
    st.builds(Appended, epochs, st.booleans(), small),
    st.builds(Refused, epochs),
    st.builds(lambda e, p, pe, data, c: Append(e, p, pe, tuple(Entry(pe, p + 1 + i, d) for i, d in enumerate(data)), c),
              epochs, small, epochs, st.lists(st.binary(max_size=6), max_size=4), small),  # fmt: skip
)
snapshot_messages = st.one_of(
    st.builds(lambda e, seq, le, size, at, data: Snapshot(e, seq, le, size, at % size, data[: size - at % size]),
              epochs, small, epochs, st.integers(1, 12), small, st.binary(min_size=1, max_size=12)),
    st.builds(SnapshotAck, epochs, small, small),
)  # fmt: skip


@fuzz_settings(200)
@given(data=mutated(messages.map(journal_codec.encode_journal), max_mutations=4))
def test_mutated_journal_messages_decode_or_are_malformed(data: bytes) -> None:
    try:
        message = journal_codec.decode_journal(data)
    except MalformedEnvelope:
        return
    assert journal_codec.decode_journal(journal_codec.encode_journal(message)) == message


@fuzz_settings(140)
@given(struct=thrift_structs(ttypes.JournalMessage, depth=4, wrong_types=True))
def test_any_decoded_journal_struct_is_checked(struct: Any) -> None:
    try:
        message = journal_codec._from_thrift(struct)
    except MalformedEnvelope:
        return
    journal_codec.encode_journal(message)


@fuzz_settings(200)
@given(data=mutated(snapshot_messages.map(journal_codec.encode_snapshot), max_mutations=4))
def test_mutated_snapshot_bodies_decode_or_are_malformed(data: bytes) -> None:
    try:
        message = journal_codec.decode_snapshot(data)
    except MalformedEnvelope:
        return
    assert journal_codec.encode_snapshot(message) == data


@fuzz_settings(200)
@given(data=st.binary(max_size=120))
def test_any_bytes_on_the_snapshot_channel_decode_or_are_malformed(data: bytes) -> None:
    try:
        journal_codec.encode_snapshot(journal_codec.decode_snapshot(data))
    except MalformedEnvelope:
        pass


def test_a_snapshot_chunk_of_the_largest_size_fits_a_direct_message() -> None:
    chunk = Snapshot((2**63 - 1, 2**160 - 1), 2**63 - 1, (1, 1), journal_codec.MAX_SNAPSHOT_BYTES, 0,
                     b"x" * SNAPSHOT_CHUNK_BYTES)  # fmt: skip
    channel, body = journal_codec.encode_message(chunk)
    assert channel == journal_codec.SNAPSHOT_CHANNEL and journal_codec.decode_snapshot(body) == chunk


@fuzz_settings(150)
@given(steps=st.lists(st.tuples(st.sampled_from(MEMBERS), st.one_of(messages, snapshot_messages), st.booleans()),
                      max_size=40))  # fmt: skip
def test_a_node_takes_any_sequence_of_messages_without_failing_or_unpromising(steps: list[Any]) -> None:
    node = JournalNode(MEMBERS[0], frozenset(MEMBERS))
    promised = node.state.promised
    for now, (sender, message, campaign) in enumerate(steps):
        sends = node.campaign(float(now)) if campaign and sender == MEMBERS[1] else []
        sends += node.receive(sender, message, float(now))
        sends += node.tick(float(now))
        node.take_chunk()
        if node.receiver.ready is not None:  # (what the driver does once a snapshot is whole)
            node.install_begin()
            sends += node.install_end()
        if node.wants_snapshot and node.is_leader:
            sends += node.offer_snapshot(node.applied, 30, float(now))
        for _, answer in sends:
            if isinstance(answer, Snapshot):  # (the driver reads the chunk's bytes)
                answer = replace(answer, data=b"s" * min(SNAPSHOT_CHUNK_BYTES, answer.size - answer.offset))
            journal_codec.encode_message(answer)
        assert node.state.promised >= promised
        promised = node.state.promised
        assert node.state.committed <= node.state.last_seq or not node.is_leader
        assert node.state.base_seq <= node.applied <= max(node.state.committed, node.state.base_seq)
        node.take_committed()
        node.state.applied = node.applied
        node.compact(1, float(now))

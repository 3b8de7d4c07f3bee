"""Fuzzing what the ledger holds: attestation batches and payout statements, and the tally reading them.

Anyone may append to the ledger what a witness or an RM would, so every entry is hostile input:

* ``decode_attestations`` over random bytes and mutated valid batches: ``MalformedAttestations``,
  or a batch that encodes back to the same bytes.
* ``decode_statement`` likewise: ``MalformedStatement``, or a statement that encodes back.
* ``UptimeTally.add_entry`` over the same entries: verdicts, never an exception, and no instant
  credited to a subject from an entry whose signature does not verify.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import example, given
from hypothesis import strategies as st

from cortex_rm.accounting.attestations import (
    Attestation,
    MalformedAttestations,
    decode_attestations,
    ring_id_of_key,
    sign_attestations,
    signature_error,
)
from cortex_rm.accounting.ledger_reading import LedgerContents
from cortex_rm.accounting.membership_log import (
    MalformedMembership,
    decode_membership,
    membership_change,
    membership_error,
    sign_membership,
)
from cortex_rm.accounting.neighbour_history import NeighbourTable
from cortex_rm.accounting.payout_statement import MalformedStatement, PayoutStatement, decode_statement, sign_statement
from cortex_rm.accounting.payouts import UptimeTally, Verdict
from cortex_rm.accounting.periods import Period
from cortex_rm.internal import ledger_codec
from cortex_rm.internal.errors import MalformedMessage
from cortex_rm.internal.gen import ttypes
from tests.fuzz.fuzzing import fuzz_settings, mutated

KEY = ec.derive_private_key(0xC0FFEE, ec.SECP256R1())
WITNESS = ring_id_of_key(KEY.public_key())
PERIOD = Period(1_788_220_800_000, 1_788_220_800_000 + 30 * 86_400_000)
BATCH = sign_attestations(
    KEY, [Attestation(WITNESS, 7 << 150, PERIOD.start_ms + i, PERIOD.start_ms + 3_600_000 + i, i + 1) for i in range(3)]
).encode()
STATEMENT = sign_statement(KEY, PayoutStatement(PERIOD, 2, 99, b"\x11" * 32, ((3, 5_000), (1 << 150, 7_000)))).encode()


def entries(valid: bytes) -> st.SearchStrategy[bytes]:
    """Random bytes, random bytes behind the right kind byte, and mutations of a valid entry."""
    return st.one_of(
        st.binary(max_size=200),
        st.binary(max_size=200).map(lambda tail: valid[:1] + tail),
        mutated(st.just(valid)),
    )


@fuzz_settings(400)
@given(entries(BATCH))
@example(BATCH)
def test_attestation_batches_decode_to_themselves_or_are_malformed(data: bytes) -> None:
    """Decoding yields a batch that re-encodes to the same bytes, or MalformedAttestations."""
    try:
        batch = decode_attestations(data)
    except MalformedAttestations:
        return
    assert batch.encode() == data
    signature_error(batch)  # answers, never raises


@fuzz_settings(400)
@given(entries(STATEMENT))
@example(STATEMENT)
def test_payout_statements_decode_to_themselves_or_are_malformed(data: bytes) -> None:
    """Decoding yields a statement that re-encodes to the same bytes, or MalformedStatement."""
    try:
        statement = decode_statement(data)
    except MalformedStatement:
        return
    assert statement.encode() == data


@fuzz_settings(300)
@given(st.lists(st.one_of(entries(BATCH), entries(STATEMENT)), max_size=4))
def test_the_tally_judges_any_entries_and_credits_only_signed_ones(data: list[bytes]) -> None:
    """Whatever the entries, the tally gives verdicts; instants are credited only from verifying batches."""
    table = NeighbourTable()
    table.add(WITNESS, 7 << 150, 0, 1 << 62)
    tally = UptimeTally(PERIOD, table)
    for entry in data:
        verdicts = tally.add_entry(entry)
        if Verdict.CREDITED in verdicts:
            assert signature_error(decode_attestations(entry)) is None
    tally.uptimes()


MEMBERSHIP = sign_membership(KEY, membership_change(PERIOD.start_ms, joined=[3, 1 << 150], left=[9])).encode()


@fuzz_settings(400)
@given(entries(MEMBERSHIP))
@example(MEMBERSHIP)
def test_membership_changes_decode_to_themselves_or_are_malformed(data: bytes) -> None:
    """A membership entry decodes to a change that re-encodes to the same bytes, or MalformedMembership;
    reading it into a ledger's contents never raises, and an unsigned or forged one changes no membership."""
    contents = LedgerContents()
    contents.absorb(0, "membership", data, lambda key: True)
    try:
        change = decode_membership(data)
    except MalformedMembership:
        assert contents.memberships.live == frozenset()
        return
    assert change.encode() == data
    if membership_error(change) is not None:
        assert contents.memberships.live == frozenset()


@fuzz_settings(300)
@given(st.lists(entries(BATCH), max_size=4), st.binary(max_size=300))
def test_the_trackers_ledger_codec_takes_well_formed_batches_only(batches: list[bytes], head: bytes) -> None:
    """submitAttestations' batches decode or are MalformedMessage; receipts too."""
    try:
        decoded = ledger_codec.batches_from_thrift(batches)
    except MalformedMessage:
        pass
    else:
        assert [b.encode() for b in decoded] == batches
    receipts = ttypes.AttestationReceipts([ttypes.AttestationReceipt(1, [head[:32]])], head)
    try:
        ledger_codec.receipts_from_thrift(receipts)
    except MalformedMessage:
        pass

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
from cortex_rm.accounting.neighbour_history import NeighbourTable
from cortex_rm.accounting.payout_statement import MalformedStatement, PayoutStatement, decode_statement, sign_statement
from cortex_rm.accounting.payouts import UptimeTally, Verdict
from cortex_rm.accounting.periods import Period
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

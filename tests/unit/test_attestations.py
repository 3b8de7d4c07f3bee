"""Attestation batches and payout statements: their bytes, their signatures, and what decoding refuses."""

from __future__ import annotations

import dataclasses

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cortex_rm.accounting.attestations import (
    KIND_ATTESTATIONS,
    Attestation,
    MalformedAttestations,
    SignedAttestations,
    decode_attestations,
    public_key_bytes,
    ring_id_of_key,
    sign_attestations,
    signature_error,
)
from cortex_rm.accounting.payout_statement import (
    KIND_PAYOUT_STATEMENT,
    MalformedStatement,
    PayoutStatement,
    decode_statement,
    sign_statement,
    statement_error,
)
from cortex_rm.accounting.periods import Period
from cortex_rm.internal.identity import ring_id_of, spki_der

WITNESS_KEY = ec.derive_private_key(0x1234567, ec.SECP256R1())
OTHER_KEY = ec.derive_private_key(0x7654321, ec.SECP256R1())
WITNESS = ring_id_of_key(WITNESS_KEY.public_key())
T0 = 1_788_220_800_000


def attestations(n: int = 3) -> list[Attestation]:
    return [Attestation(WITNESS, (i + 1) << 100, T0 + i * 1000, T0 + i * 1000 + 3_600_000, T0 * 1024 + i) for i in range(n)]


def test_ring_id_is_that_of_the_node_identity() -> None:
    """A witness's ring id from its key is the ring's own: SHA-1 of the DER SPKI (internal/identity.py)."""
    assert ring_id_of_key(WITNESS_KEY.public_key()) == ring_id_of(spki_der(WITNESS_KEY.public_key()))


def test_a_signed_batch_round_trips_and_verifies() -> None:
    """Encode then decode gives the same batch; its signature verifies; its size is 108 + 40 n (+/- DER)."""
    batch = sign_attestations(WITNESS_KEY, attestations(9))
    data = batch.encode()
    assert data[0] == KIND_ATTESTATIONS and len(data) == batch.size
    assert 36 + 9 * 40 + 1 + 68 <= len(data) <= 36 + 9 * 40 + 1 + 72
    decoded = decode_attestations(data)
    assert decoded == batch and decoded.witness == WITNESS
    assert decoded.encode() == data
    assert signature_error(decoded) is None


def test_one_attestation_is_under_150_bytes() -> None:
    """A batch of one: header 36, entry 40, signature at most 73 with its length."""
    assert sign_attestations(WITNESS_KEY, attestations(1)).size <= 149


def test_a_batch_under_another_witness_key_or_altered_does_not_verify() -> None:
    """Claiming another witness needs its key in the batch, and then our signature fails; so does any edit."""
    other = ring_id_of_key(OTHER_KEY.public_key())
    mine = sign_attestations(OTHER_KEY, [dataclasses.replace(a, witness=other) for a in attestations()])
    forged = SignedAttestations(public_key_bytes(WITNESS_KEY.public_key()), tuple(attestations()), mine.signature)
    assert decode_attestations(forged.encode()).witness == WITNESS
    assert signature_error(decode_attestations(forged.encode())) is not None
    honest = sign_attestations(WITNESS_KEY, attestations())
    stretched = dataclasses.replace(honest.attestations[0], end_ms=honest.attestations[0].end_ms + 1)
    altered = SignedAttestations(honest.witness_key, (stretched, *honest.attestations[1:]), honest.signature)
    assert signature_error(decode_attestations(altered.encode())) is not None


def test_signing_refuses_attestations_of_another_witness() -> None:
    """A key signs only attestations that name its own ring id as witness."""
    with pytest.raises(ValueError):
        sign_attestations(OTHER_KEY, attestations())
    with pytest.raises(ValueError):
        sign_attestations(WITNESS_KEY, [])


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda d: d[:-1], "signature length"),
        (lambda d: d + b"\x00", "signature length"),
        (lambda d: b"\x02" + d[1:], "kind byte"),
        (lambda d: d[:34] + b"\x00\x00" + d[36:], "1 to 1024"),
        (lambda d: d[:34] + b"\x04\x01" + d[36:], "1 to 1024"),
        (lambda d: d[:1] + b"\x02" + b"\xff" * 32 + d[34:], "P-256 point"),  # x beyond the field
        (lambda d: d[:1] + b"\x05" + d[2:], "P-256 point"),  # no such point form
        (lambda d: d[:64] + b"\x00\x00\x00\x00" + d[68:], "empty or out of range"),  # length 0
        (lambda d: d[:56] + b"\xff" * 8 + d[64:], "out of range"),  # start beyond 2**63
        (lambda d: d[:10], "too short"),
    ],
)
def test_decoding_refuses_malformed_batches(mutate: object, reason: str) -> None:
    """Wrong lengths, kinds, counts, points and intervals are MalformedAttestations naming the fault."""
    data = sign_attestations(WITNESS_KEY, attestations(2)).encode()
    assert callable(mutate)
    with pytest.raises(MalformedAttestations, match=reason):
        decode_attestations(mutate(data))


def test_attestation_records_refuse_impossible_values() -> None:
    """Empty or reversed intervals, ids wider than 160 bits, spans over 2**32 ms are refused at construction."""
    for bad in (
        dict(start_ms=5, end_ms=5),
        dict(witness=1 << 160),
        dict(start_ms=0, end_ms=1 << 33),
        dict(sequence=-1),
    ):
        with pytest.raises(ValueError):
            Attestation(**{**dict(witness=1, subject=2, start_ms=0, end_ms=10, sequence=0), **bad})


def statement() -> PayoutStatement:
    return PayoutStatement(Period(T0, T0 + 30 * 86_400_000), 2, 12_345, b"\xab" * 32, ((5, 1_000), (9, 3_000)))


def test_a_signed_statement_round_trips_verifies_and_gives_exact_shares() -> None:
    """The RM's statement encodes deterministically, decodes to itself, verifies; shares sum to 1."""
    signed = sign_statement(WITNESS_KEY, statement())
    data = signed.encode()
    assert data[0] == KIND_PAYOUT_STATEMENT
    assert decode_statement(data) == signed and statement_error(decode_statement(data)) is None
    assert signed.signer == WITNESS
    assert signed.share(5) + signed.share(9) == 1 and signed.share(9) == 3 * signed.share(5)
    assert signed.share(7) == 0
    tampered = dataclasses.replace(signed, uptimes=((5, 2_000), (9, 3_000)))
    assert statement_error(tampered) is not None


def test_statements_refuse_unsorted_nodes_and_impossible_uptimes() -> None:
    """Nodes in increasing order only, uptimes within the period; an unsigned statement has no encoding."""
    with pytest.raises(ValueError):
        dataclasses.replace(statement(), uptimes=((9, 1), (5, 1)))
    with pytest.raises(ValueError):
        dataclasses.replace(statement(), uptimes=((5, 31 * 86_400_000),))
    with pytest.raises(ValueError):
        statement().encode()
    data = sign_statement(WITNESS_KEY, statement()).encode()
    for bad in (data[:-1], data[:20], b"\x01" + data[1:]):
        with pytest.raises(MalformedStatement):
            decode_statement(bad)


def test_keys_are_compressed_points_of_p256() -> None:
    """A batch carries the 33-byte compressed point of the same key the node's certificate holds."""
    key = public_key_bytes(WITNESS_KEY.public_key())
    assert len(key) == 33
    assert ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), key).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == spki_der(WITNESS_KEY.public_key())

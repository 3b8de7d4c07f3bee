"""Attestations: a witness's signed word that it saw its ring neighbours alive, and their bytes.

An ``Attestation`` says: *witness* ``W`` saw *subject* ``S`` alive (acknowledging
``W``'s probes) throughout ``[start_ms, end_ms)``; ``sequence`` numbers ``W``'s
attestations so that a copy is recognised (``payouts.py``: replays earn nothing).
A witness signs its attestations in batches -- everything due at one flush of its
``UptimeWitness`` -- with its node key, and the batch is one ledger entry.

Encoding (all integers big-endian; one batch, version 1)::

    kind       1   0x01: an attestation batch, version 1 (0x02 is a payout statement)
    key       33   the witness's P-256 public key, SEC1 compressed point
    count      2   n, 1 <= n <= 1024
    n entries 40   subject ring id (20), start_ms (8), length_ms (4, >= 1), sequence (8)
    siglen     1   at most 72
    signature      ECDSA P-256 / SHA-256, DER (as ``dht/ring_trust.py`` signs rumours)

The signature covers ``b"cortex-attestations\\x00"`` followed by every byte before
``siglen``.  The witness's ring id is not sent: it is the SHA-1 of the key's DER
``SubjectPublicKeyInfo``, as for every ring id (``internal/identity.py``), so a
batch proves who made it by itself.  A batch of n attestations takes
``108 + 40 n`` bytes with a typical 71-byte signature (148 for one, 468 for nine).

Decoding is strict and bounded: the exact length, the kind, a point on the curve,
``1 <= n <= 1024``, non-empty intervals that end before 2**63 and sequences below
2**63; anything else is ``MalformedAttestations``.  So an accepted batch encodes
back to the same bytes.  Whether an attestation *counts* (self-attestation, a
non-neighbour witness, a replay) is the payout rules' question, not the codec's.
"""

from __future__ import annotations

import functools
import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

KIND_ATTESTATIONS = 0x01
"""First byte of a ledger entry that is a witness's attestation batch (version 1)."""

MAX_ATTESTATIONS = 1024  # per batch: far above one flush of a witness (its neighbours, ~10-30)
MAX_SPAN_MS = (1 << 32) - 1  # one attestation covers at most ~49.7 days
MAX_SIGNATURE_BYTES = 72  # a DER ECDSA P-256 signature
KEY_BYTES = 33  # a SEC1 compressed P-256 point
RING_ID_BYTES = 20
_LIMIT = 1 << 63  # instants and sequences stay below, so they fit a signed 64-bit column

_HEADER = struct.Struct(">B33sH")
_ENTRY = struct.Struct(">20sQIQ")
_DOMAIN = b"cortex-attestations\x00"
_ECDSA = ec.ECDSA(hashes.SHA256())


class MalformedAttestations(ValueError):
    """The bytes are not an attestation batch (version 1)."""


@dataclass(frozen=True)
class Attestation:
    """``witness`` saw ``subject`` alive throughout ``[start_ms, end_ms)``; ``sequence`` numbers the claim."""

    witness: int
    subject: int
    start_ms: int
    end_ms: int
    sequence: int

    def __post_init__(self) -> None:
        for name in ("witness", "subject"):
            if not 0 <= getattr(self, name) < 1 << (8 * RING_ID_BYTES):
                raise ValueError(f"attestation {name} {getattr(self, name)} is not a 160-bit ring id")
        if not 0 <= self.start_ms < self.end_ms < _LIMIT:
            raise ValueError(f"attestation interval [{self.start_ms}, {self.end_ms}) is empty or out of range")
        if self.end_ms - self.start_ms > MAX_SPAN_MS:
            raise ValueError(f"attestation interval longer than {MAX_SPAN_MS} ms")
        if not 0 <= self.sequence < _LIMIT:
            raise ValueError(f"attestation sequence {self.sequence} out of range")


@dataclass(frozen=True)
class SignedAttestations:
    """One witness's batch: its key, its attestations (each naming it as witness), its signature."""

    witness_key: bytes
    attestations: tuple[Attestation, ...]
    signature: bytes

    @property
    def witness(self) -> int:
        """The witness's ring id (from its key)."""
        return key_identity(self.witness_key)[1]

    def body(self) -> bytes:
        """Every byte before the signature's length: what the signature covers (after the domain)."""
        parts = [_HEADER.pack(KIND_ATTESTATIONS, self.witness_key, len(self.attestations))]
        for a in self.attestations:
            subject = a.subject.to_bytes(RING_ID_BYTES, "big")
            parts.append(_ENTRY.pack(subject, a.start_ms, a.end_ms - a.start_ms, a.sequence))
        return b"".join(parts)

    def encode(self) -> bytes:
        """The ledger entry: body, signature length, signature."""
        return self.body() + bytes([len(self.signature)]) + self.signature

    @property
    def size(self) -> int:
        """Bytes of the encoding."""
        return _HEADER.size + _ENTRY.size * len(self.attestations) + 1 + len(self.signature)


def public_key_bytes(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """A P-256 public key as a batch carries it: the SEC1 compressed point (33 bytes)."""
    return public_key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)


def ring_id_of_key(public_key: ec.EllipticCurvePublicKey) -> int:
    """The ring id a key stands for: SHA-1 of its DER ``SubjectPublicKeyInfo``, big-endian."""
    spki = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return int.from_bytes(hashlib.sha1(spki).digest(), "big")


@functools.lru_cache(maxsize=8192)
def key_identity(key: bytes) -> tuple[ec.EllipticCurvePublicKey, int]:
    """The public key a compressed point stands for, and its ring id (ValueError: not a P-256 point)."""
    if len(key) != KEY_BYTES:
        raise ValueError(f"a witness key is {KEY_BYTES} bytes, not {len(key)}")
    public_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), key)
    return public_key, ring_id_of_key(public_key)


def sign_attestations(
    private_key: ec.EllipticCurvePrivateKey, attestations: Sequence[Attestation]
) -> SignedAttestations:
    """``attestations`` (each naming this key's ring id as witness) signed as one batch."""
    if not 1 <= len(attestations) <= MAX_ATTESTATIONS:
        raise ValueError(f"a batch holds 1 to {MAX_ATTESTATIONS} attestations, not {len(attestations)}")
    if not isinstance(private_key.curve, ec.SECP256R1):
        raise ValueError("witness keys are P-256")
    key = public_key_bytes(private_key.public_key())
    witness = key_identity(key)[1]
    for a in attestations:
        if a.witness != witness:
            raise ValueError(f"attestation names witness {a.witness:040x}, but the key is {witness:040x}'s")
    unsigned = SignedAttestations(key, tuple(attestations), b"")
    return SignedAttestations(key, unsigned.attestations, private_key.sign(_DOMAIN + unsigned.body(), _ECDSA))


def decode_attestations(data: bytes) -> SignedAttestations:
    """The batch ``data`` encodes (``MalformedAttestations`` if it is not one); the signature is not checked."""
    if len(data) < _HEADER.size + _ENTRY.size + 1:
        raise MalformedAttestations(f"{len(data)} bytes are too short for an attestation batch")
    kind, key, count = _HEADER.unpack_from(data)
    if kind != KIND_ATTESTATIONS:
        raise MalformedAttestations(f"kind byte {kind:#04x} is not an attestation batch ({KIND_ATTESTATIONS:#04x})")
    if not 1 <= count <= MAX_ATTESTATIONS:
        raise MalformedAttestations(f"a batch holds 1 to {MAX_ATTESTATIONS} attestations, not {count}")
    signature_at = _HEADER.size + _ENTRY.size * count
    if len(data) <= signature_at:
        raise MalformedAttestations(f"{len(data)} bytes cannot hold {count} attestations and a signature")
    signature = data[signature_at + 1 :]
    if len(signature) != data[signature_at] or not 0 < len(signature) <= MAX_SIGNATURE_BYTES:
        raise MalformedAttestations(
            f"signature length {data[signature_at]} does not match the {len(signature)} bytes left"
        )
    try:
        witness = key_identity(bytes(key))[1]
    except ValueError as error:
        raise MalformedAttestations(f"the witness key is not a P-256 point: {error}") from None
    attestations = []
    for subject, start, length, sequence in _ENTRY.iter_unpack(data[_HEADER.size : signature_at]):
        try:
            attestations.append(Attestation(witness, int.from_bytes(subject, "big"), start, start + length, sequence))
        except ValueError as error:
            raise MalformedAttestations(str(error)) from None
    return SignedAttestations(bytes(key), tuple(attestations), bytes(signature))


def signature_error(batch: SignedAttestations) -> str | None:
    """Why ``batch`` was not signed by its witness key (None: it was)."""
    try:
        public_key = key_identity(batch.witness_key)[0]
    except ValueError:
        return "the witness key is not a P-256 point"
    try:
        public_key.verify(batch.signature, _DOMAIN + batch.body(), _ECDSA)
    except (InvalidSignature, ValueError):
        return "the signature does not verify with the witness key"
    return None

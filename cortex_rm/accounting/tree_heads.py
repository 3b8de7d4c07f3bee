"""Signed tree heads (STH): the log keeper's signed word on the ledger's size and root, and the mirrors' check of them.

In the manner of RFC 6962 section 3.5: the active RM signs (size, root hash,
timestamp) with its node key, ECDSA P-256 over SHA-256 (the identity key of
``internal/identity.py``, passed in as a ``cryptography`` key object).  What is
signed is a fixed-length byte string, so one head has exactly one encoding::

    "cortex-ledger-sth\\0"   18 bytes, the domain: never valid as any other signed message
    version                 1 byte  (1)
    timestamp_ms            8 bytes big-endian  (ms since the epoch, the signer's clock)
    tree_size               8 bytes big-endian
    root_hash               32 bytes  (merkle.root_hash of the first tree_size leaves)
    key_id                  32 bytes  SHA-256 of the signer's public key (DER SubjectPublicKeyInfo)

On the wire (gossip, storage) an STH is that message, then a one-byte signature
length and the DER signature (``encode_tree_head`` / ``decode_tree_head``).

A mirror (another RM-eligible node) keeps the last head it accepted in a
``TreeHeadWatcher``.  Every new head it hears (from the log, or gossiped by another
mirror) comes with a consistency proof between the two sizes; a head that cannot be
reconciled with the last one is a *fork*: the log showed two histories.  The watcher
keeps the evidence: both signed heads and the proof.  Two validly signed heads of the
same size with different roots convict the signer on their own (``conclusive``);
a proof that does not verify needs the log to fail to give a good one.
"""

from __future__ import annotations

import enum
import hashlib
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cortex_rm.accounting.ledger_errors import MalformedTreeHead
from cortex_rm.accounting.merkle import HASH_BYTES, MAX_TREE_SIZE, verify_consistency

STH_DOMAIN = b"cortex-ledger-sth\x00"
STH_VERSION = 1
KEY_ID_BYTES = 32
MAX_SIGNATURE_BYTES = 72  # a DER ECDSA P-256 signature is at most 72 bytes
_FIXED = struct.Struct(">BQQ")
MESSAGE_BYTES = len(STH_DOMAIN) + _FIXED.size + HASH_BYTES + KEY_ID_BYTES
MAX_ENCODED_BYTES = MESSAGE_BYTES + 1 + MAX_SIGNATURE_BYTES
MAX_TIMESTAMP_MS = (1 << 63) - 1

KeyLookup = Callable[[bytes], ec.EllipticCurvePublicKey | None]  # key id -> the signer's public key, if we trust it


def key_id_of(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """The key id of a signer: SHA-256 of its public key's DER SubjectPublicKeyInfo (as RFC 6962's LogID)."""
    spki = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).digest()


def tree_head_message(size: int, root_hash: bytes, timestamp_ms: int, key_id: bytes) -> bytes:
    """The bytes a tree head's signature covers (the module doc's layout)."""
    if not 0 <= size <= MAX_TREE_SIZE or not 0 <= timestamp_ms <= MAX_TIMESTAMP_MS:
        raise MalformedTreeHead(f"tree head out of range: size {size}, timestamp {timestamp_ms}")
    if len(root_hash) != HASH_BYTES or len(key_id) != KEY_ID_BYTES:
        raise MalformedTreeHead("a tree head's root hash and key id are 32 bytes each")
    return STH_DOMAIN + _FIXED.pack(STH_VERSION, timestamp_ms, size) + root_hash + key_id


@dataclass(frozen=True)
class SignedTreeHead:
    """The log keeper's signed statement: the first ``size`` leaves hash to ``root_hash`` (at ``timestamp_ms``)."""

    size: int
    root_hash: bytes
    timestamp_ms: int
    key_id: bytes
    signature: bytes

    def __post_init__(self) -> None:
        tree_head_message(self.size, self.root_hash, self.timestamp_ms, self.key_id)  # validates the fields
        if not 0 < len(self.signature) <= MAX_SIGNATURE_BYTES:
            raise MalformedTreeHead(f"a tree head signature of {len(self.signature)} bytes")

    def message(self) -> bytes:
        """The signed bytes."""
        return tree_head_message(self.size, self.root_hash, self.timestamp_ms, self.key_id)

    def describe(self) -> str:
        """A short human form for logs and evidence: size, root prefix, signer prefix."""
        return f"STH(size={self.size}, root={self.root_hash.hex()[:16]}, ts={self.timestamp_ms}, key={self.key_id.hex()[:12]})"


def sign_tree_head(
    private_key: ec.EllipticCurvePrivateKey, size: int, root_hash: bytes, timestamp_ms: int
) -> SignedTreeHead:
    """A tree head signed with ``private_key`` (ECDSA P-256, SHA-256)."""
    key_id = key_id_of(private_key.public_key())
    message = tree_head_message(size, root_hash, timestamp_ms, key_id)
    signature = private_key.sign(message, ec.ECDSA(hashes.SHA256()))
    return SignedTreeHead(size, root_hash, timestamp_ms, key_id, signature)


def signature_error(sth: SignedTreeHead, keys: KeyLookup) -> str | None:
    """Why ``sth`` is not signed by a key we trust (None: it is)."""
    public_key = keys(sth.key_id)
    if public_key is None:
        return f"{sth.describe()} is signed by an unknown key"
    if key_id_of(public_key) != sth.key_id:
        return f"{sth.describe()}: the key given for its key id has another id"
    if not isinstance(public_key.curve, ec.SECP256R1):
        return f"{sth.describe()} is signed with a key that is not P-256"
    try:
        public_key.verify(sth.signature, sth.message(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return f"{sth.describe()} has a bad signature"
    return None


def keys_by_id(public_keys: Sequence[ec.EllipticCurvePublicKey]) -> KeyLookup:
    """A ``KeyLookup`` over a fixed set of trusted keys (the RM-eligible nodes' identity keys)."""
    table = {key_id_of(k): k for k in public_keys}
    return table.get


def encode_tree_head(sth: SignedTreeHead) -> bytes:
    """The wire form: the signed message, one byte of signature length, the signature."""
    return sth.message() + bytes([len(sth.signature)]) + sth.signature


def decode_tree_head(data: bytes) -> SignedTreeHead:
    """Parse ``encode_tree_head``'s form; anything else raises ``MalformedTreeHead`` (the signature is not checked)."""
    if not MESSAGE_BYTES + 1 < len(data) <= MAX_ENCODED_BYTES:
        raise MalformedTreeHead(f"a signed tree head of {len(data)} bytes")
    if not data.startswith(STH_DOMAIN):
        raise MalformedTreeHead("not a signed tree head (domain)")
    at = len(STH_DOMAIN)
    version, timestamp_ms, size = _FIXED.unpack_from(data, at)
    if version != STH_VERSION:
        raise MalformedTreeHead(f"signed tree head version {version}")
    at += _FIXED.size
    root_hash, key_id = data[at : at + HASH_BYTES], data[at + HASH_BYTES : MESSAGE_BYTES]
    signature_length = data[MESSAGE_BYTES]
    signature = data[MESSAGE_BYTES + 1 :]
    if len(signature) != signature_length:
        raise MalformedTreeHead(f"signature length {signature_length} but {len(signature)} bytes follow")
    return SignedTreeHead(size, bytes(root_hash), timestamp_ms, bytes(key_id), bytes(signature))


# ---------------------------------------------------------------- the mirrors' check


class Verdict(enum.Enum):
    """What a watcher made of a new tree head."""

    ACCEPTED = "accepted"  # consistent with the last head (it may be the new last one)
    REJECTED = "rejected"  # not signed by a trusted key, or malformed: says nothing about the log
    FORK = "fork"  # two validly signed heads that no consistency proof reconciles


@dataclass(frozen=True)
class ForkEvidence:
    """Two signed heads of one log that disagree, and the proof that failed to reconcile them.

    ``conclusive``: the heads have the same size and different roots, so the signer(s)
    contradicted themselves with no proof needed.  Otherwise ``proof`` (from ``earlier``'s
    size to ``later``'s) did not verify.
    """

    earlier: SignedTreeHead
    later: SignedTreeHead
    proof: tuple[bytes, ...]
    reason: str
    conclusive: bool


@dataclass(frozen=True)
class Observation:
    """A watcher's answer about one head: the verdict, why, and the evidence of a fork (FORK only)."""

    verdict: Verdict
    reason: str
    evidence: ForkEvidence | None = None


class TreeHeadWatcher:
    """A mirror's memory of the ledger: the largest consistent signed head seen so far, and any fork found.

    ``observe(sth, proof)``: ``proof`` is the consistency proof between the smaller
    and the larger of (``latest``, ``sth``) sizes (empty if equal, or if nothing was
    seen yet).  A head larger than ``latest`` and consistent with it becomes
    ``latest``; a smaller consistent one (a gossiped old head) is accepted and
    changes nothing.  ``forks`` keeps every fork's evidence; ``latest`` never moves to
    a head that forked from it.
    """

    def __init__(self, keys: KeyLookup, latest: SignedTreeHead | None = None) -> None:
        self._keys = keys
        self.latest = latest
        self.forks: list[ForkEvidence] = []

    def observe(self, sth: SignedTreeHead, proof: Sequence[bytes]) -> Observation:
        """Check ``sth`` (with the consistency proof to or from ``latest``) and remember it if it is the newest."""
        error = signature_error(sth, self._keys)
        if error is not None:
            return Observation(Verdict.REJECTED, error)
        last = self.latest
        if last is None:
            self.latest = sth
            return Observation(Verdict.ACCEPTED, f"first head {sth.describe()}")
        if sth.size == last.size:
            if sth.root_hash != last.root_hash:
                return self._fork(last, sth, proof, "two heads of the same size with different roots", True)
            if sth.timestamp_ms > last.timestamp_ms:
                self.latest = sth
            return Observation(Verdict.ACCEPTED, f"same tree as {last.describe()}")
        earlier, later = (last, sth) if last.size < sth.size else (sth, last)
        if not verify_consistency(earlier.size, later.size, earlier.root_hash, later.root_hash, proof):
            return self._fork(
                earlier, later, proof, f"no valid consistency proof from size {earlier.size} to {later.size}", False
            )
        if later is sth:
            self.latest = sth
            return Observation(Verdict.ACCEPTED, f"grew from {last.size} to {sth.size}")
        return Observation(Verdict.ACCEPTED, f"older head consistent with {last.describe()}")

    def _fork(
        self, earlier: SignedTreeHead, later: SignedTreeHead, proof: Sequence[bytes], reason: str, conclusive: bool
    ) -> Observation:
        evidence = ForkEvidence(earlier, later, tuple(proof), reason, conclusive)
        self.forks.append(evidence)
        return Observation(Verdict.FORK, f"{reason}: {earlier.describe()} vs {later.describe()}", evidence)


def evidence_error(evidence: ForkEvidence, keys: KeyLookup) -> str | None:
    """Why ``evidence`` does not stand (None: both heads are validly signed and its proof does not reconcile them).

    A node gossiped evidence checks it before it believes it.  Conclusive evidence
    (same size, different roots) convicts on its own.  Other evidence only says that
    *this* proof fails, and anyone can make a bad proof: the receiver confirms it by
    asking the log (or its own mirror copy) for the consistency proof between the two
    sizes and feeding both heads to its own ``TreeHeadWatcher``.
    """
    for sth in (evidence.earlier, evidence.later):
        error = signature_error(sth, keys)
        if error is not None:
            return error
    a, b = evidence.earlier, evidence.later
    if a.size > b.size:
        return "evidence heads out of order"
    if a.size == b.size:
        return None if a.root_hash != b.root_hash else "the heads agree"
    if evidence.conclusive:
        return "heads of different sizes are never conclusive"
    if verify_consistency(a.size, b.size, a.root_hash, b.root_hash, evidence.proof):
        return "the proof reconciles the heads"
    return None

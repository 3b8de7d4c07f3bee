"""The ledger's calls on the NodeTracker wire: a witness's batches in, receipts out (``cortex.thrift``).

Decoding validates everything (``MalformedMessage`` otherwise): at most
``MAX_BATCHES_PER_CALL`` batches, each a well-formed attestation batch
(``accounting/attestations.py``; the signature is the ledger office's check), and
receipts whose audit paths are lists of 32-byte hashes, at most 64 each, with a
tree head that decodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cortex_rm.accounting.attestations import MalformedAttestations, SignedAttestations, decode_attestations
from cortex_rm.accounting.ledger_errors import MalformedTreeHead
from cortex_rm.accounting.ledger_office import MAX_BATCH_BYTES, MAX_BATCHES_PER_CALL, Receipt, Receipts
from cortex_rm.accounting.merkle import HASH_BYTES
from cortex_rm.accounting.tree_heads import decode_tree_head, encode_tree_head
from cortex_rm.internal.errors import MalformedMessage
from cortex_rm.internal.gen import ttypes
from cortex_rm.internal.tracker_codec import _int, _validate

MAX_AUDIT_PATH = 64  # hashes in an inclusion proof of a tree of up to 2**64 entries
MAX_INDEX = (1 << 63) - 1


def batches_to_thrift(batches: Sequence[SignedAttestations]) -> list[bytes]:
    return [batch.encode() for batch in batches]


def batches_from_thrift(value: Any) -> list[SignedAttestations]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_BATCHES_PER_CALL:
        raise MalformedMessage(f"batches must be a list of 1 to {MAX_BATCHES_PER_CALL} attestation batches")
    decoded = []
    for number, data in enumerate(value):
        if not isinstance(data, bytes) or len(data) > MAX_BATCH_BYTES:
            raise MalformedMessage(f"batch {number} must be at most {MAX_BATCH_BYTES} bytes")
        try:
            decoded.append(decode_attestations(data))
        except MalformedAttestations as e:
            raise MalformedMessage(f"batch {number}: {e}") from None
    return decoded


def receipts_to_thrift(receipts: Receipts) -> ttypes.AttestationReceipts:
    return ttypes.AttestationReceipts(
        [ttypes.AttestationReceipt(r.index, list(r.audit_path)) for r in receipts.receipts],
        encode_tree_head(receipts.tree_head),
    )


def receipts_from_thrift(value: Any) -> Receipts:
    if not isinstance(value, ttypes.AttestationReceipts):
        raise MalformedMessage("the attestation receipts are missing")
    _validate(value, "AttestationReceipts")
    if not isinstance(value.receipts, list) or len(value.receipts) > MAX_BATCHES_PER_CALL:
        raise MalformedMessage(f"at most {MAX_BATCHES_PER_CALL} receipts")
    if not isinstance(value.tree_head, bytes):
        raise MalformedMessage("tree_head must be bytes")
    try:
        head = decode_tree_head(value.tree_head)
    except MalformedTreeHead as e:
        raise MalformedMessage(f"tree_head: {e}") from None
    receipts = []
    for receipt in value.receipts:
        if not isinstance(receipt, ttypes.AttestationReceipt):
            raise MalformedMessage("a receipt is missing")
        _validate(receipt, "AttestationReceipt")
        index = _int(receipt.index, "index", 0, MAX_INDEX)
        path = receipt.audit_path
        if not isinstance(path, list) or len(path) > MAX_AUDIT_PATH:
            raise MalformedMessage(f"an audit path is a list of at most {MAX_AUDIT_PATH} hashes")
        if any(not isinstance(h, bytes) or len(h) != HASH_BYTES for h in path):
            raise MalformedMessage(f"an audit path holds {HASH_BYTES}-byte hashes")
        receipts.append(Receipt(index, tuple(path)))
    return Receipts(tuple(receipts), head)

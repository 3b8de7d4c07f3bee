"""Reading the RM's ledger documents (``ledger_rest.py``) as a mirror receives them: bounded, validated, typed.

Everything here is remote input: a body is refused past its size bound, must be
the exact JSON shape ``ledger_rest`` writes, and every value is checked (indices
contiguous from the one asked for, hashes 32 bytes, payloads valid base64 within
the entry bound, ``ledger_store.MAX_PAYLOAD_BYTES``) before the mirror sees it.
An entries page may hold fewer entries than asked (the RM bounds a page by bytes).  Anything else raises
``MalformedLedgerDocument``; nothing here is trusted further than its shape (the
mirror checks the hashes and signatures).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from cortex_rm.accounting.ledger_errors import LedgerError
from cortex_rm.accounting.ledger_store import LedgerEntry
from cortex_rm.accounting.merkle import HASH_BYTES
from cortex_rm.accounting.tree_heads import MAX_ENCODED_BYTES, SignedTreeHead, decode_tree_head

MAX_HEAD_BODY = 4096
MAX_PROOF_HASHES = 130  # a consistency proof has at most about 2 log2(n) hashes
MAX_PROOF_BODY = 64 * 1024
# An entries page: ``ledger_rest`` bounds a page to about ``MAX_PAGE_PAYLOAD`` payload bytes (fewer entries than
# asked past it, always at least one), each entry at most ``ledger_store.MAX_PAYLOAD_BYTES`` (4 MiB); base64
# makes 4/3 of that, and the JSON around each entry (index, kind, keys) is small: 12 MiB holds a full page.
MAX_PAGE_PAYLOAD = 8 * 1024 * 1024
MAX_ENTRIES_BODY = 12 * 1024 * 1024


class MalformedLedgerDocument(LedgerError):
    """A ledger document from the RM that does not have the shape ``ledger_rest`` writes."""


def _document(body: bytes, limit: int, top: str) -> Any:
    if len(body) > limit:
        raise MalformedLedgerDocument(f"a {top} document of {len(body)} bytes (at most {limit})")
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MalformedLedgerDocument(f"a {top} document that is not JSON: {e}") from None
    except RecursionError:
        raise MalformedLedgerDocument(f"a {top} document nested too deeply") from None
    if not isinstance(document, dict) or set(document) != {top}:
        raise MalformedLedgerDocument(f"a ledger document must be an object with the one key {top!r}")
    return document[top]


def _hex(text: Any, what: str, length: int | None = None) -> bytes:
    if not isinstance(text, str) or len(text) > 2 * MAX_ENCODED_BYTES:
        raise MalformedLedgerDocument(f"{what} must be hex text")
    try:
        data = bytes.fromhex(text)
    except ValueError:
        raise MalformedLedgerDocument(f"{what} is not hex") from None
    if length is not None and len(data) != length:
        raise MalformedLedgerDocument(f"{what} must be {length} bytes, not {len(data)}")
    return data


def _int(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise MalformedLedgerDocument(f"{what} must be a non-negative integer")
    return value


def parse_tree_head(body: bytes) -> SignedTreeHead:
    """``GET /ws/v1/cortex/ledger``: the head its ``encoded`` field holds (the other fields must agree)."""
    head = _document(body, MAX_HEAD_BODY, "treeHead")
    if not isinstance(head, dict):
        raise MalformedLedgerDocument("treeHead must be an object")
    try:
        sth = decode_tree_head(_hex(head.get("encoded"), "treeHead.encoded"))
    except LedgerError as e:
        raise MalformedLedgerDocument(f"treeHead.encoded: {e}") from None
    if head.get("size") != sth.size or head.get("rootHash") != sth.root_hash.hex():
        raise MalformedLedgerDocument("treeHead's size and rootHash disagree with its encoding")
    return sth


def parse_entries(body: bytes, start: int, end: int) -> list[LedgerEntry]:
    """``GET /ws/v1/cortex/ledger/entries?start=&end=``: entries ``start``, ``start + 1``... (at most ``end - start``)."""
    rows = _document(body, MAX_ENTRIES_BODY, "entries")
    if not isinstance(rows, list) or len(rows) > max(0, end - start):
        raise MalformedLedgerDocument(f"entries must be a list of at most {max(0, end - start)} entries")
    entries: list[LedgerEntry] = []
    for at, row in enumerate(rows, start):
        if not isinstance(row, dict) or set(row) != {"index", "kind", "payload"}:
            raise MalformedLedgerDocument("an entry must have exactly the keys index, kind and payload")
        if _int(row["index"], "an entry's index") != at:
            raise MalformedLedgerDocument(f"entry {at} came as index {row['index']}")
        payload = row["payload"]
        if not isinstance(payload, str) or not isinstance(row["kind"], str):
            raise MalformedLedgerDocument(f"entry {at}: kind and payload must be text")
        try:
            entries.append(LedgerEntry(row["kind"], base64.b64decode(payload, validate=True)))
        except (binascii.Error, ValueError) as e:
            raise MalformedLedgerDocument(f"entry {at}'s payload is not base64: {e}") from None
        except LedgerError as e:
            raise MalformedLedgerDocument(f"entry {at}: {e}") from None
    return entries


def parse_consistency(body: bytes, first: int, second: int) -> list[bytes]:
    """``GET /ws/v1/cortex/ledger/consistency?first=&second=``: the proof's hashes."""
    proof = _document(body, MAX_PROOF_BODY, "consistency")
    if not isinstance(proof, dict) or set(proof) != {"first", "second", "proof"}:
        raise MalformedLedgerDocument("consistency must have exactly the keys first, second and proof")
    if proof["first"] != first or proof["second"] != second:
        raise MalformedLedgerDocument(f"asked for the proof from {first} to {second}, got another")
    hashes = proof["proof"]
    if not isinstance(hashes, list) or len(hashes) > MAX_PROOF_HASHES:
        raise MalformedLedgerDocument(f"a consistency proof is a list of at most {MAX_PROOF_HASHES} hashes")
    return [_hex(h, "a proof hash", HASH_BYTES) for h in hashes]

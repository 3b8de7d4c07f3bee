"""Fuzzing what a ledger mirror takes from the network: the RM's ledger documents and gossiped heads.

* ``ledger_documents.parse_*`` over mutated real documents: typed values of the
  asked shape, or ``MalformedLedgerDocument``; never another exception.
* ``LedgerHeads.receive`` over gossip items with mutated payloads and keys: a bool,
  and a head is kept only under its publisher's own ring id; with a mirror on the
  node, only when its signature verifies with the RM's key the mirror trusts.
"""

from __future__ import annotations

import base64
import json
import random

from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from twisted.internet import defer, task
from hypothesis import strategies as st

from cortex_rm.accounting.attestations import ring_id_of_key
from cortex_rm.accounting.ledger import MerkleLog
from cortex_rm.accounting.ledger_mirror import LedgerMirror
from cortex_rm.accounting.ledger_reading import membership_entry
from cortex_rm.accounting.ledger_store import LedgerEntry, MemoryLedgerStore
from cortex_rm.accounting.membership_log import membership_change, sign_membership
from cortex_rm.accounting.tree_heads import SignedTreeHead, decode_tree_head, encode_tree_head
from cortex_rm.dht.ring_math import format_id
from cortex_rm.dht.swim_messages import GossipItem
from cortex_rm.roles.ledger_mirror import LEDGER_STH_SECTION, LedgerHeads
from cortex_rm.yarn_api.ledger_documents import (
    MalformedLedgerDocument,
    parse_consistency,
    parse_entries,
    parse_tree_head,
)
from cortex_rm.yarn_api.ledger_rest import tree_head_json
from tests.fuzz.fuzzing import fuzz_settings, mutated

KEY = ec.generate_private_key(ec.SECP256R1())
LOG = MerkleLog(MemoryLedgerStore())
LOG.append([LedgerEntry("attestations", f"entry-{i}".encode()) for i in range(9)])
HEAD = LOG.sign_tree_head(KEY, 1234)
HEAD_DOC = json.dumps(tree_head_json(HEAD)).encode()
ENTRIES_DOC = json.dumps(
    {"entries": [{"index": r.index, "kind": r.kind, "payload": base64.b64encode(r.payload).decode()} for r in LOG.entries(2, 6)]}
).encode()
PROOF_DOC = json.dumps({"consistency": {"first": 3, "second": 9, "proof": [h.hex() for h in LOG.consistency_proof(3, 9)]}}).encode()


@fuzz_settings(300)
@given(mutated(st.sampled_from([HEAD_DOC, ENTRIES_DOC, PROOF_DOC])))
def test_ledger_documents_parse_or_are_malformed(body: bytes) -> None:
    """Every parser answers its typed value or MalformedLedgerDocument, whatever the body."""
    for parse in (parse_tree_head, lambda b: parse_entries(b, 2, 6), lambda b: parse_consistency(b, 3, 9)):
        try:
            value = parse(body)
        except MalformedLedgerDocument:
            continue
        if isinstance(value, list):
            assert all(isinstance(v, (bytes, LedgerEntry)) for v in value) and len(value) <= 6
    assert parse_tree_head(HEAD_DOC) == HEAD and len(parse_entries(ENTRIES_DOC, 2, 6)) == 4


@fuzz_settings(300)
@given(mutated(st.just(encode_tree_head(HEAD))), st.integers(0, 2**160 - 1), st.booleans())
def test_gossiped_heads_are_kept_only_under_their_publisher(payload: bytes, publisher: int, own_key: bool) -> None:
    """A mutated head or a key naming another member is refused; nothing raises."""
    heads = LedgerHeads()
    key = format_id(publisher) if own_key else format_id(publisher ^ 1)
    kept = heads.receive(GossipItem(LEDGER_STH_SECTION, key, payload, publisher=publisher))
    assert isinstance(kept, bool)
    if kept:
        assert own_key and publisher and heads.heads == {publisher: payload}


def _synced_mirror() -> LedgerMirror:
    """A mirror that holds ``LOG``'s first entries under a head, trusting ``KEY`` (a TOFU membership entry)."""
    source = MerkleLog(MemoryLedgerStore())
    source.append([membership_entry(sign_membership(KEY, membership_change(0, joined=[ring_id_of_key(KEY.public_key())], snapshot=True)))])
    mirror = LedgerMirror(MerkleLog(MemoryLedgerStore()), defer.maybeDeferred, task.Clock(), frozenset(), random.Random(1))
    defer.ensureDeferred(mirror.open())

    class Source:
        def tree_head(self) -> defer.Deferred[SignedTreeHead]:
            return defer.succeed(source.sign_tree_head(KEY, 1))

        def entries(self, start: int, end: int) -> defer.Deferred[list[LedgerEntry]]:
            return defer.succeed([r.entry() for r in source.entries(start, end)])

        def consistency_proof(self, first: int, second: int) -> defer.Deferred[list[bytes]]:
            return defer.succeed(source.consistency_proof(first, second))

    defer.ensureDeferred(mirror.sync_round(Source()))
    assert mirror.size == 1 and mirror.head is not None
    return mirror


MIRROR = _synced_mirror()


@fuzz_settings(300)
@given(mutated(st.just(encode_tree_head(HEAD))), st.integers(1, 2**160 - 1))
def test_with_a_mirror_gossiped_heads_are_kept_only_when_signed_by_the_rm_key(payload: bytes, publisher: int) -> None:
    """A mutated head whose signature no longer verifies leaves no state, in the heads or the mirror."""
    heads = LedgerHeads()
    heads.attach(MIRROR)
    MIRROR.peer_heads.clear()
    kept = heads.receive(GossipItem(LEDGER_STH_SECTION, format_id(publisher), payload, publisher=publisher))
    if kept:
        assert MIRROR.head_error(decode_tree_head(payload)) is None and list(MIRROR.peer_heads) == [publisher]
    else:
        assert heads.heads == {} and MIRROR.peer_heads == {}

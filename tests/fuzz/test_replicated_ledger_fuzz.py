"""The ledger's journal entries (``ha/replicated_ledger.py``) under hostile input, through the one router
(``ha/journal_applier.py``), applied to a copy that holds a few entries and a head.

* Mutated encodings of valid entries (appends, parts, tree heads) and valid entries with one value replaced
  by any JSON value: refused with ``UnknownOperation`` (not one), ``LedgerConflict`` (the copy disagrees),
  or applied; never another exception.  What is applied keeps every leaf hash its entry's: the copy's
  entries all rehash to their stored leaf hashes.
"""

from __future__ import annotations

import json
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from cortex_rm.accounting.ledger import MerkleLog
from cortex_rm.accounting.ledger_errors import LedgerConflict
from cortex_rm.accounting.ledger_store import LedgerEntry, MemoryLedgerStore
from cortex_rm.accounting.tree_heads import encode_tree_head, sign_tree_head
from cortex_rm.allocator.state_store import synchronous_runner
from cortex_rm.ha import replicated_ledger
from cortex_rm.ha.journal import Entry
from cortex_rm.ha.journal_applier import journal_applier
from cortex_rm.ha.ledger_parts import MemoryLedgerParts
from cortex_rm.ha.replicated_ledger import LedgerCopy, encode_append
from cortex_rm.ha.replicated_state import UnknownOperation, encode_operation
from tests.fuzz.fuzzing import fuzz_settings, mutated
from tests.fuzz.test_replicated_stores_fuzz import _paths, _replaced, json_values
from tests.support.rm_core import result_of

KEY = ec.generate_private_key(ec.SECP256R1())
HELD = [LedgerEntry("membership", b"m"), LedgerEntry("attestation", b"a0"), LedgerEntry("attestation", b"a1")]


def copy_holding() -> LedgerCopy:
    """A copy of three entries and one head."""
    copy = LedgerCopy(MemoryLedgerStore(), MemoryLedgerParts(), synchronous_runner)
    log = MerkleLog(copy.store)
    log.append(HELD)
    log.sign_tree_head(KEY, 1)
    return copy


kinds = st.sampled_from(["attestation", "membership", "payout"])
new_entries = st.lists(st.builds(LedgerEntry, kinds, st.binary(max_size=40)), min_size=1, max_size=3)
appends = st.builds(
    lambda first, entries: encode_append(first, [(e, e.leaf_hash()) for e in entries], [])[0],
    st.sampled_from([1, 3]), new_entries,
)  # fmt: skip
heads = st.integers(0, 3).map(
    lambda size: encode_operation(
        "ledger", "tree_head", [size, encode_tree_head(sign_tree_head(KEY, size, bytes(32), 2))]
    )
)
parts = st.integers(0, 1).map(
    lambda n: encode_operation("ledger", "part", [3, n, 2, bytes(32), '{"store":"ledger"'[n * 8 : n * 8 + 8]])
)
ledger_entries = st.one_of(appends, heads, parts)


def applied_or_refused(data: bytes) -> None:
    copy = copy_holding()
    apply = journal_applier({replicated_ledger.STORE: replicated_ledger.ledger_applier(copy)})
    try:
        result_of(apply(Entry((1, 1), 1, data)))
    except (UnknownOperation, LedgerConflict):
        pass
    rows = copy.store.entries(0, copy.store.size())
    assert [r.index for r in rows] == list(range(len(rows))) and len(rows) >= len(HELD)
    assert all(r.entry().leaf_hash() == r.leaf_hash for r in rows)


@fuzz_settings(200)
@given(data=mutated(ledger_entries, max_mutations=4))
def test_mutated_ledger_entries_apply_or_are_refused(data: bytes) -> None:
    applied_or_refused(data)


@fuzz_settings(300)
@given(entry=ledger_entries, data=st.data())
def test_ledger_entries_with_any_value_replaced_apply_or_are_refused(entry: bytes, data: st.DataObject) -> None:
    document: Any = json.loads(entry)
    where = data.draw(st.randoms(use_true_random=False)).choice(_paths(document)[4:])  # (below store, op, args)
    applied_or_refused(json.dumps(_replaced(document, where, data.draw(json_values, label="value"))).encode())

"""Fuzzing what mirrors take from the network: signed tree heads and the proofs that come with them.

* ``decode_tree_head`` over mutated encodings of real heads: a head, or ``MalformedTreeHead``.
* A ``TreeHeadWatcher`` fed decoded (mutated) heads with random proofs: a verdict,
  never an exception; a head it did not accept never becomes its latest; a fork is
  only ever declared between two heads that verify under trusted keys.
* The proof verifiers over random indices, sizes and hash lists: False or True, never an exception.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from cortex_rm.accounting.ledger import MerkleLog
from cortex_rm.accounting.ledger_errors import MalformedTreeHead
from cortex_rm.accounting.ledger_store import LedgerEntry, MemoryLedgerStore
from cortex_rm.accounting.merkle import verify_consistency, verify_inclusion
from cortex_rm.accounting.tree_heads import (
    TreeHeadWatcher,
    Verdict,
    decode_tree_head,
    encode_tree_head,
    keys_by_id,
    signature_error,
)
from tests.fuzz.fuzzing import fuzz_settings, mutated

KEY = ec.generate_private_key(ec.SECP256R1())
KEYS = keys_by_id([KEY.public_key()])
LOG = MerkleLog(MemoryLedgerStore())
HEADS = []
for _batch in range(6):
    LOG.append([LedgerEntry("attestation", f"{_batch}-{i}".encode()) for i in range(1 + _batch * 3)])
    HEADS.append(LOG.sign_tree_head(KEY, 1000 + _batch))
ENCODED = [encode_tree_head(h) for h in HEADS]

hashes = st.lists(st.one_of(st.binary(min_size=32, max_size=32), st.binary(max_size=40)), max_size=12)


@fuzz_settings(300)
@given(mutated(st.sampled_from(ENCODED)))
def test_tree_heads_decode_or_are_malformed(data: bytes) -> None:
    """Mutated heads decode to a head that re-encodes to the same bytes, or raise MalformedTreeHead."""
    try:
        sth = decode_tree_head(data)
    except MalformedTreeHead:
        return
    assert encode_tree_head(sth) == data


@fuzz_settings(200)
@given(
    st.lists(
        st.tuples(mutated(st.sampled_from(ENCODED), max_mutations=2) | st.sampled_from(ENCODED), hashes), max_size=6
    )
)
def test_a_watcher_fed_hostile_heads_and_proofs_never_raises_nor_accepts_forgeries(
    stream: list[tuple[bytes, list[bytes]]],
) -> None:
    """Every observation ends in a verdict; latest is always a trusted head; fork evidence is two trusted heads."""
    watcher = TreeHeadWatcher(KEYS, latest=HEADS[0])
    for data, proof in stream:
        try:
            sth = decode_tree_head(data)
        except MalformedTreeHead:
            continue
        seen = watcher.observe(sth, proof)
        assert seen.verdict in (Verdict.ACCEPTED, Verdict.REJECTED, Verdict.FORK)
        if seen.verdict is not Verdict.ACCEPTED:
            assert watcher.latest != sth or sth == HEADS[0]
        assert watcher.latest is not None and signature_error(watcher.latest, KEYS) is None
    for evidence in watcher.forks:
        assert signature_error(evidence.earlier, KEYS) is None and signature_error(evidence.later, KEYS) is None


@fuzz_settings(300)
@given(st.integers(-2, 1 << 65), st.integers(-2, 1 << 65), hashes, st.binary(max_size=40), st.binary(max_size=40))
def test_proof_verifiers_never_raise(a: int, b: int, proof: list[bytes], one: bytes, two: bytes) -> None:
    """Any sizes, indices and byte strings: the verifiers answer a bool."""
    assert isinstance(verify_inclusion(a, b, one, proof, two), bool)
    assert isinstance(verify_consistency(a, b, one, two, proof), bool)

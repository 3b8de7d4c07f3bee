"""The ledger's Merkle tree (``accounting/merkle.py``, ``merkle_tiles.py``) against the RFC's own recursive definitions.

The oracle (``tests/support/merkle_oracle.py``) is RFC 9162 section 2.1 written as recursion over a list of leaf
hashes (MTH, PATH, SUBPROOF); the code under test generates proofs from subtree
hashes and verifies them with the iterative algorithms.  Properties: every proof
the code makes equals the RFC's and verifies; any altered leaf, proof hash, index
or size fails; garbage never raises.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping, Sequence

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from cortex_rm.accounting.merkle import (
    EMPTY_ROOT,
    Subtree,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    range_subtrees,
    root_hash,
    verify_consistency,
    verify_inclusion,
)
from cortex_rm.accounting.merkle_tiles import MerkleFrontier, TiledHashes, is_stored_level, stored_cover
from tests.support.merkle_oracle import mth, path, subproof

# ---------------------------------------------------------------- sources


class ListSource:
    """Complete subtree hashes straight from a list of leaf hashes (by the oracle)."""

    def __init__(self, leaves: Sequence[bytes]) -> None:
        self.leaves = leaves
        self.asked = 0

    def subtree_hashes(self, wanted: Sequence[Subtree]) -> dict[Subtree, bytes]:
        self.asked += len(wanted)
        return {s: mth(self.leaves[s.start : s.end]) for s in wanted}


def leaves_of(n: int, salt: bytes = b"") -> list[bytes]:
    return [leaf_hash(salt + i.to_bytes(8, "big")) for i in range(n)]


def tiled_store(leaves: Sequence[bytes]) -> TiledHashes:
    """What ``ledger.py`` keeps: the leaves and the subtrees a frontier completes at stored levels."""
    frontier = MerkleFrontier()
    stored: dict[Subtree, bytes] = {}
    for i, leaf in enumerate(leaves):
        stored[Subtree(0, i)] = leaf
        for subtree, digest in frontier.append(leaf):
            if is_stored_level(subtree.level):
                stored[subtree] = digest

    def fetch(wanted: Collection[Subtree]) -> Mapping[Subtree, bytes]:
        return {s: stored[s] for s in wanted}

    return TiledHashes(fetch)


sizes = st.integers(min_value=1, max_value=300)

# ---------------------------------------------------------------- tests


def test_empty_tree_root_is_the_hash_of_nothing() -> None:
    """MTH({}) is SHA-256 of the empty string, as RFC 6962 says."""
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert root_hash(0, ListSource([])) == EMPTY_ROOT
    assert MerkleFrontier().root() == EMPTY_ROOT


def test_leaf_and_node_hashes_are_domain_separated() -> None:
    """Leaves are hashed with a 0x00 prefix, nodes with 0x01: a node's bytes as a leaf give another hash."""
    a, b = leaf_hash(b"a"), leaf_hash(b"b")
    assert a == hashlib.sha256(b"\x00a").digest()
    assert node_hash(a, b) == hashlib.sha256(b"\x01" + a + b).digest()
    assert leaf_hash(a + b) != node_hash(a, b)


def test_range_subtrees_tile_a_tree_largest_first() -> None:
    """13 leaves are the complete subtrees of 8, 4 and 1; a misaligned range is refused."""
    assert range_subtrees(0, 13) == [Subtree(3, 0), Subtree(2, 2), Subtree(0, 12)]
    assert range_subtrees(8, 13) == [Subtree(2, 2), Subtree(0, 12)]
    try:
        range_subtrees(3, 7)
    except ValueError:
        pass
    else:
        raise AssertionError("a misaligned range must be refused")


@given(sizes)
def test_root_of_frontier_and_of_stored_subtrees_equals_the_rfc_definition(n: int) -> None:
    """The frontier's root after each append, and the root from stored tiles, equal MTH of the leaves so far."""
    leaves = leaves_of(n)
    frontier = MerkleFrontier()
    for i, leaf in enumerate(leaves):
        frontier.append(leaf)
        if i % 7 == 0 or i == n - 1:
            assert frontier.root() == mth(leaves[: i + 1])
    store = tiled_store(leaves)
    assert root_hash(n, store) == mth(leaves)
    assert MerkleFrontier.of_tree(n, store).hashes == frontier.hashes


@given(sizes, st.data())
def test_inclusion_proofs_equal_the_rfc_path_and_verify(n: int, data: st.DataObject) -> None:
    """PATH(m, D[n]) from stored tiles equals the RFC's, and verifies against MTH(D[n])."""
    leaves = leaves_of(n)
    index = data.draw(st.integers(0, n - 1))
    proof = inclusion_proof(index, n, tiled_store(leaves))
    assert proof == path(index, leaves)
    assert verify_inclusion(index, n, leaves[index], proof, mth(leaves))


@given(sizes, st.data())
def test_consistency_proofs_equal_the_rfc_proof_and_verify(n: int, data: st.DataObject) -> None:
    """PROOF(m, D[n]) from stored tiles equals the RFC's, and verifies between MTH(D[m]) and MTH(D[n])."""
    leaves = leaves_of(n)
    m = data.draw(st.integers(0, n))
    proof = consistency_proof(m, n, tiled_store(leaves))
    assert proof == (subproof(m, leaves, True) if m else [])
    assert verify_consistency(m, n, mth(leaves[:m]), mth(leaves), proof)


@given(sizes, st.data())
def test_any_altered_inclusion_proof_fails(n: int, data: st.DataObject) -> None:
    """Another leaf, a flipped bit in any proof hash, a hash left out or added, another index or size: no."""
    leaves = leaves_of(n)
    index = data.draw(st.integers(0, n - 1))
    proof = path(index, leaves)
    root = mth(leaves)
    assert not verify_inclusion(index, n, leaf_hash(b"forged"), proof, root)
    if proof:
        at = data.draw(st.integers(0, len(proof) - 1))
        bit = data.draw(st.integers(0, 255))
        bent = list(proof)
        bent[at] = bytes(b ^ (1 << (bit % 8)) if j == bit // 8 else b for j, b in enumerate(bent[at]))
        assert not verify_inclusion(index, n, leaves[index], bent, root)
        assert not verify_inclusion(index, n, leaves[index], proof[:-1], root)
    assert not verify_inclusion(index, n, leaves[index], proof + [root], root)
    other = data.draw(st.integers(0, n - 1))
    assume(other != index)
    assert not verify_inclusion(other, n, leaves[index], proof, root)


@given(st.integers(1, 200), st.integers(1, 200), st.data())
def test_an_inclusion_proof_does_not_verify_against_a_tree_head_of_another_size(
    n: int, other_size: int, data: st.DataObject
) -> None:
    """The proof for one tree, checked against the (size, root) of a tree with more or fewer leaves, fails."""
    assume(n != other_size)
    leaves = leaves_of(max(n, other_size))
    index = data.draw(st.integers(0, min(n, other_size) - 1))
    proof = path(index, leaves[:n])
    assert not verify_inclusion(index, other_size, leaves[index], proof, mth(leaves[:other_size]))


@given(sizes, st.data())
def test_any_altered_consistency_proof_fails(n: int, data: st.DataObject) -> None:
    """Another old root, new root, a bent or shortened or lengthened proof, or other sizes: no."""
    leaves = leaves_of(n + 40)
    m = data.draw(st.integers(1, n))
    proof = subproof(m, leaves[:n], True)
    old, new = mth(leaves[:m]), mth(leaves[:n])
    forged = mth(leaves_of(m, b"forged"))
    assert not verify_consistency(m, n, forged, new, proof)
    assert not verify_consistency(m, n, old, forged, proof)
    if proof:
        at = data.draw(st.integers(0, len(proof) - 1))
        bent = list(proof)
        bent[at] = leaf_hash(bent[at])
        assert not verify_consistency(m, n, old, new, bent)
        assert not verify_consistency(m, n, old, new, proof[:-1])
    assert not verify_consistency(m, n, old, new, proof + [new])
    # other sizes, each with the true root of that size over the same leaves
    m2 = data.draw(st.integers(1, n + 40))
    n2 = data.draw(st.integers(m2, n + 40))
    assume((m2, n2) != (m, n))
    assume(proof or m2 != n2)  # an empty proof is the right one for any two equal sizes
    assert not verify_consistency(m2, n2, mth(leaves[:m2]), mth(leaves[:n2]), proof)


def test_consistency_of_equal_sizes_and_from_the_empty_tree() -> None:
    """Equal sizes: empty proof and equal roots; from 0 leaves: empty proof and the empty root; old > new: no."""
    leaves = leaves_of(5)
    root = mth(leaves)
    assert verify_consistency(5, 5, root, root, [])
    assert not verify_consistency(5, 5, root, mth(leaves[:4]), [])
    assert not verify_consistency(5, 5, root, root, [root])
    assert verify_consistency(0, 5, EMPTY_ROOT, root, [])
    assert not verify_consistency(0, 5, root, root, [])
    assert not verify_consistency(5, 4, root, mth(leaves[:4]), [])


@settings(max_examples=300)
@given(
    st.integers(-3, 1 << 64),
    st.integers(-3, 1 << 64),
    st.lists(st.binary(min_size=0, max_size=40), max_size=70),
    st.binary(max_size=40),
)
def test_garbage_never_verifies_and_never_raises(a: int, b: int, proof: list[bytes], digest: bytes) -> None:
    """Arbitrary sizes, indices and byte strings make the verifiers say False, never raise."""
    assert verify_inclusion(a, b, digest, proof, digest) in (False, True)
    assert verify_consistency(a, b, digest, digest, proof) in (False, True)
    if len(digest) != 32:
        assert not verify_inclusion(a, b, digest, proof, digest)


def test_stored_cover_rebuilds_unstored_levels_from_the_level_below() -> None:
    """A level-6 subtree is rebuilt from 4 stored level-4 subtrees; level-3 from 8 leaves."""
    assert stored_cover(Subtree(6, 1)) == [Subtree(4, i) for i in range(4, 8)]
    assert stored_cover(Subtree(3, 2)) == [Subtree(0, i) for i in range(16, 24)]
    assert stored_cover(Subtree(8, 5)) == [Subtree(8, 5)]


def test_a_proof_in_a_million_leaf_tree_needs_few_lookups() -> None:
    """Proofs cost O(log n) subtree look-ups, not a rehash: 2**20 + 12345 leaves, under 200 stored hashes."""
    n = (1 << 20) + 12345
    asked: list[int] = []

    def fetch(wanted: Collection[Subtree]) -> Mapping[Subtree, bytes]:
        asked.append(len(wanted))
        return {s: hashlib.sha256(repr(s).encode()).digest() for s in wanted}

    source = TiledHashes(fetch)
    inclusion_proof(777_777, n, source)
    consistency_proof(600_001, n, source)
    assert len(asked) == 2 and max(asked) < 200

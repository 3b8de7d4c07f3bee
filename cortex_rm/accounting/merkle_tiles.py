"""Keeping a Merkle tree that only grows: the right edge while appending, and which subtree hashes to store.

**The frontier.**  A tree of n leaves is, by ``merkle.range_subtrees(0, n)``, one
complete subtree per set bit of n.  ``MerkleFrontier`` keeps exactly those hashes
(at most 62): appending a leaf pushes a subtree of level 0 and merges the two
rightmost subtrees while they have the same level, like a binary counter's carry.
Each merge completes a subtree, which it reports, so whoever stores the tree can
keep it; the root of any size is the right fold of the frontier.  Appending costs
one leaf hash and on average one node hash.

**Tiles.**  Storing every completed subtree would double the rows of the log.  We
store the leaves (level 0, with the entries) and every completed subtree whose level
is a multiple of ``TILE_LEVELS`` (4, 8, ...): about n/15 extra hashes.  Any other
complete subtree is rebuilt from the 2**(level mod 4) stored subtrees below it, at
most 8 hashes, so a proof still costs O(log n) look-ups (``TiledHashes``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence

from cortex_rm.accounting.merkle import (
    EMPTY_ROOT,
    HASH_BYTES,
    MAX_TREE_SIZE,
    Subtree,
    fold_right,
    node_hash,
    perfect_root,
    range_subtrees,
)

TILE_LEVELS = 4  # subtrees of levels 0, 4, 8, ... are stored; the others are rebuilt from them


def is_stored_level(level: int) -> bool:
    """Whether complete subtrees of this level are stored (the leaves always are)."""
    return level % TILE_LEVELS == 0


def stored_cover(subtree: Subtree) -> list[Subtree]:
    """The stored subtrees, left to right, whose ``perfect_root`` is the hash of ``subtree``."""
    base = subtree.level - subtree.level % TILE_LEVELS
    count = 1 << (subtree.level - base)
    first = subtree.position * count
    return [Subtree(base, first + j) for j in range(count)]


class TiledHashes:
    """A ``merkle.HashSource`` over a store that keeps only the stored levels.

    ``fetch`` returns the stored hashes asked for (leaves at level 0, the others at
    levels that are multiples of ``TILE_LEVELS``); a missing one raises ``KeyError``
    (asking beyond the tree is a bug of the caller).
    """

    def __init__(self, fetch: Callable[[Collection[Subtree]], Mapping[Subtree, bytes]]) -> None:
        self._fetch = fetch

    def subtree_hashes(self, wanted: Sequence[Subtree]) -> dict[Subtree, bytes]:
        covers = {s: stored_cover(s) for s in wanted}
        needed = sorted({c for cover in covers.values() for c in cover})
        stored = self._fetch(needed)
        return {s: perfect_root([stored[c] for c in cover]) for s, cover in covers.items()}


class MerkleFrontier:
    """The complete subtrees that make up a tree of ``size`` leaves, largest first (see the module doc)."""

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if not 0 <= size <= MAX_TREE_SIZE:
            raise ValueError(f"bad tree size {size}")
        tiling = range_subtrees(0, size)
        if len(hashes) != len(tiling) or any(len(h) != HASH_BYTES for h in hashes):
            raise ValueError(f"a tree of {size} leaves has a frontier of {len(tiling)} hashes, not {len(hashes)}")
        self.size = size
        self._levels = [s.level for s in tiling]
        self._hashes = list(hashes)

    @classmethod
    def of_tree(cls, size: int, source: TiledHashes) -> MerkleFrontier:
        """The frontier of the first ``size`` leaves of a stored tree."""
        tiling = range_subtrees(0, size)
        found = source.subtree_hashes(tiling)
        return cls(size, [found[s] for s in tiling])

    @property
    def hashes(self) -> list[bytes]:
        """The frontier's hashes, largest subtree first."""
        return list(self._hashes)

    def copy(self) -> MerkleFrontier:
        return MerkleFrontier(self.size, self._hashes)

    def append(self, leaf: bytes) -> list[tuple[Subtree, bytes]]:
        """Add a leaf hash; the subtrees (of level >= 1) it completes, with their hashes, smallest first."""
        if len(leaf) != HASH_BYTES:
            raise ValueError("a leaf hash is 32 bytes")
        self.size += 1
        levels, hashes = self._levels, self._hashes
        levels.append(0)
        hashes.append(leaf)
        completed: list[tuple[Subtree, bytes]] = []
        while len(levels) > 1 and levels[-1] == levels[-2]:
            right = hashes.pop()
            level = levels.pop() + 1
            hashes[-1] = node_hash(hashes[-1], right)
            levels[-1] = level
            # the merged subtree ends at the new size, a multiple of 2**level
            completed.append((Subtree(level, (self.size >> level) - 1), hashes[-1]))
        return completed

    def root(self) -> bytes:
        """MTH of the tree so far (``EMPTY_ROOT`` for no leaves)."""
        return fold_right(self._hashes) if self._hashes else EMPTY_ROOT

"""The transparent ledger: an append-only Merkle log of typed entries, its signed tree heads, proofs, and a full audit.

``MerkleLog`` is the ledger over a ``LedgerStore``, with blocking methods: it runs
on the store's thread (or inline in tests and benchmarks).  ``Ledger`` is the same
ledger seen from the reactor: each call runs through a ``Runner`` (one dedicated
thread in the daemon, so appends are applied in the order they were issued) and
returns a Deferred.

The log keeps the right edge of its tree (``MerkleFrontier``) in memory, so an
append hashes only its own entries (about two hashes each) and writes the leaf
hashes and the subtrees they complete, in one transaction.  Roots of past sizes and
proofs are folded from stored subtree hashes (O(log n) rows).  Only one process may
append: a second writer's append fails with ``LedgerConflict`` and writes nothing.

The active RM appends and signs tree heads (``sign_tree_head``); a mirror replays
the entries it fetched with ``append(entries, expected_root=sth.root_hash)``, which
writes nothing unless they hash to the head's root, then keeps the head
(``add_tree_head``).  ``verify_all`` trusts no stored hash: it rehashes every entry,
rebuilds the tree and compares every stored subtree hash and every kept tree head
(and their signatures, given the keys), so one edited row anywhere is reported.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import ec
from twisted.internet.defer import Deferred

from cortex_rm.accounting.ledger_errors import BadLedgerRequest, LedgerConflict, LedgerError, MalformedTreeHead
from cortex_rm.accounting.ledger_store import LedgerEntry, LedgerStore, StoredEntry
from cortex_rm.accounting.merkle import EMPTY_ROOT, Subtree, consistency_proof, inclusion_proof, root_hash
from cortex_rm.accounting.merkle_tiles import MerkleFrontier, TiledHashes, is_stored_level
from cortex_rm.accounting.tree_heads import (
    KeyLookup,
    SignedTreeHead,
    decode_tree_head,
    encode_tree_head,
    sign_tree_head,
    signature_error,
)
from cortex_rm.yarn.blocking import Runner

AUDIT_CHUNK = 8192  # entries read per query while auditing
MAX_PROBLEMS = 100  # an audit lists at most this many problems (and counts the rest)


@dataclass
class LedgerAudit:
    """What ``verify_all`` found: the size it rebuilt, how many heads it checked, and every problem (bounded)."""

    size: int = 0
    tree_heads_checked: int = 0
    signatures_checked: bool = False
    problems: list[str] = field(default_factory=list)
    more_problems: int = 0  # problems beyond MAX_PROBLEMS, counted only

    @property
    def ok(self) -> bool:
        """No problem at all."""
        return not self.problems

    def problem(self, text: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)
        else:
            self.more_problems += 1


class MerkleLog:
    """The ledger over a store, blocking (see the module doc)."""

    def __init__(self, store: LedgerStore) -> None:
        self.store = store
        self._hashes = TiledHashes(self._fetch)
        self._frontier: MerkleFrontier | None = None

    def _fetch(self, wanted: Collection[Subtree]) -> Mapping[Subtree, bytes]:
        found = self.store.stored_hashes(wanted)
        if len(found) != len(set(wanted)):
            missing = sorted(set(wanted) - set(found))[:3]
            raise LedgerError(f"stored subtree hashes missing (e.g. {missing}): the store is damaged, run verify_all")
        return found

    def _frontier_now(self) -> MerkleFrontier:
        if self._frontier is None:
            self._frontier = MerkleFrontier.of_tree(self.store.size(), self._hashes)
        return self._frontier

    # ------------------------------------------------------------ writing

    def append(self, entries: Sequence[LedgerEntry], expected_root: bytes | None = None) -> int:
        """Append ``entries`` in order, in one transaction; the index of the first.

        With ``expected_root`` (a mirror replaying the log up to a tree head), nothing
        is written unless the log's new root equals it (``LedgerConflict``).
        """
        frontier = self._frontier_now().copy()
        first = frontier.size
        rows: list[tuple[LedgerEntry, bytes]] = []
        nodes: list[tuple[Subtree, bytes]] = []
        for entry in entries:
            digest = entry.leaf_hash()
            rows.append((entry, digest))
            nodes.extend(done for done in frontier.append(digest) if is_stored_level(done[0].level))
        if expected_root is not None and frontier.root() != expected_root:
            raise LedgerConflict(f"entries {first}..{frontier.size - 1} do not hash to the expected root")
        try:
            self.store.append(first, rows, nodes)
        except LedgerConflict:
            self._frontier = None  # someone else wrote: read the edge again next time
            raise
        self._frontier = frontier
        return first

    def root_with(self, entries: Sequence[LedgerEntry]) -> bytes:
        """The root the log would have with ``entries`` appended (nothing is written): how a mirror
        checks a chunk it fetched against a consistency proof before it keeps it."""
        frontier = self._frontier_now().copy()
        for entry in entries:
            frontier.append(entry.leaf_hash())
        return frontier.root()

    def sign_tree_head(self, private_key: ec.EllipticCurvePrivateKey, timestamp_ms: int) -> SignedTreeHead:
        """Sign the log as it is now (size and root) and keep the head."""
        frontier = self._frontier_now()
        sth = sign_tree_head(private_key, frontier.size, frontier.root(), timestamp_ms)
        self.store.add_tree_head(sth.size, encode_tree_head(sth))
        return sth

    def add_tree_head(self, sth: SignedTreeHead) -> None:
        """Keep a head signed elsewhere (a mirror's copy of the log's heads) if our log has that tree.

        ``LedgerConflict`` if our first ``sth.size`` entries hash to another root,
        ``BadLedgerRequest`` if we have fewer entries.  The signature is the caller's
        check (``tree_heads.signature_error`` or a ``TreeHeadWatcher``).
        """
        if sth.root_hash != self.root_hash(sth.size):
            raise LedgerConflict(f"{sth.describe()} disagrees with our log at that size")
        self.store.add_tree_head(sth.size, encode_tree_head(sth))

    # ------------------------------------------------------------ reading

    def size(self) -> int:
        """Number of entries."""
        return self._frontier_now().size

    def _check_size(self, size: int) -> None:
        if not 0 <= size <= self.size():
            raise BadLedgerRequest(f"no tree of size {size} in a log of {self.size()}")

    def root_hash(self, size: int | None = None) -> bytes:
        """The Merkle root of the first ``size`` entries (all of them by default)."""
        if size is None or size == self.size():
            return self._frontier_now().root()
        self._check_size(size)
        return root_hash(size, self._hashes) if size else EMPTY_ROOT

    def entries(self, start: int, end: int) -> list[StoredEntry]:
        """The stored entries with ``start <= index < end`` (``end`` capped at the log's size)."""
        return self.store.entries(start, min(end, self.size()))

    def index_of(self, entry: LedgerEntry) -> int | None:
        """The index of the first copy of ``entry`` in the log, if any."""
        return self.store.index_of(entry.leaf_hash())

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """The audit path of entry ``index`` in the tree of ``size`` entries (the whole log by default)."""
        size = self.size() if size is None else size
        self._check_size(size)
        if not 0 <= index < size:
            raise BadLedgerRequest(f"no entry {index} in a tree of {size}")
        return inclusion_proof(index, size, self._hashes)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """The proof that the tree of ``old_size`` entries is a prefix of the one of ``new_size`` (default: all)."""
        new_size = self.size() if new_size is None else new_size
        self._check_size(new_size)
        if not 0 <= old_size <= new_size:
            raise BadLedgerRequest(f"no consistency proof from {old_size} to {new_size}")
        return consistency_proof(old_size, new_size, self._hashes)

    def tree_heads(self) -> list[SignedTreeHead]:
        """Every kept head, by size (``MalformedTreeHead`` if a stored one is damaged)."""
        return [decode_tree_head(encoded) for _, encoded in self.store.tree_heads()]

    def latest_tree_head(self) -> SignedTreeHead | None:
        """The kept head of the largest size (the latest timestamp among equals), if any."""
        heads = self.tree_heads()
        return max(heads, key=lambda h: (h.size, h.timestamp_ms)) if heads else None

    # ------------------------------------------------------------ audit

    def verify_all(self, keys: KeyLookup | None = None, chunk: int = AUDIT_CHUNK) -> LedgerAudit:
        """Rebuild the tree from the stored entries and check every stored hash and kept head (see the module doc)."""
        audit = LedgerAudit(signatures_checked=keys is not None)
        checkpoints = self._audit_heads(audit, keys)
        frontier = MerkleFrontier()
        emitted = 0
        self._check_heads_at(audit, checkpoints, frontier)
        while True:
            rows = self.store.entries(frontier.size, frontier.size + chunk)
            if not rows:
                break
            completed: dict[int, dict[int, bytes]] = {}
            for row in rows:
                if row.index != frontier.size:
                    audit.problem(f"entry {frontier.size} is missing (the next stored one is {row.index})")
                    return self._finish(audit, frontier)
                for done, digest in frontier.append(self._audit_leaf(audit, row)):
                    if is_stored_level(done.level):
                        completed.setdefault(done.level, {})[done.position] = digest
                self._check_heads_at(audit, checkpoints, frontier)
            for level, expected in completed.items():
                emitted += len(expected)
                stored = self.store.nodes(level, min(expected), max(expected) + 1)
                for index in sorted(i for i in expected if stored.get(i) != expected[i]):
                    audit.problem(f"stored hash of subtree ({level}, {index}) is not the hash of its entries")
        stored_nodes = self.store.node_count()
        if stored_nodes != emitted:
            audit.problem(f"{stored_nodes} subtree hashes stored, the tree has {emitted}")
        for size in sorted(s for s in checkpoints if s > frontier.size):
            audit.problem(f"tree head of size {size} but the log has {frontier.size} entries")
        return self._finish(audit, frontier)

    @staticmethod
    def _finish(audit: LedgerAudit, frontier: MerkleFrontier) -> LedgerAudit:
        audit.size = frontier.size
        return audit

    @staticmethod
    def _audit_leaf(audit: LedgerAudit, row: StoredEntry) -> bytes:
        try:
            digest = row.entry().leaf_hash()
        except BadLedgerRequest as e:
            audit.problem(f"entry {row.index} is malformed: {e}")
            return row.leaf_hash if len(row.leaf_hash) == 32 else bytes(32)
        if digest != row.leaf_hash:
            audit.problem(f"entry {row.index}: stored leaf hash is not the hash of its kind and payload")
        return digest  # the tree is rebuilt from the entries themselves

    def _audit_heads(self, audit: LedgerAudit, keys: KeyLookup | None) -> dict[int, list[SignedTreeHead]]:
        checkpoints: dict[int, list[SignedTreeHead]] = {}
        for row_size, encoded in self.store.tree_heads():
            try:
                sth = decode_tree_head(encoded)
            except MalformedTreeHead as e:
                audit.problem(f"a stored tree head of size {row_size} is malformed: {e}")
                continue
            if sth.size != row_size:
                audit.problem(f"{sth.describe()} is stored under size {row_size}")
            if keys is not None:
                error = signature_error(sth, keys)
                if error is not None:
                    audit.problem(error)
            checkpoints.setdefault(sth.size, []).append(sth)
        return checkpoints

    @staticmethod
    def _check_heads_at(
        audit: LedgerAudit, checkpoints: dict[int, list[SignedTreeHead]], frontier: MerkleFrontier
    ) -> None:
        heads = checkpoints.get(frontier.size)
        if not heads:
            return
        root = frontier.root()
        for sth in heads:
            audit.tree_heads_checked += 1
            if sth.root_hash != root:
                audit.problem(f"{sth.describe()}: the stored entries hash to {root.hex()[:16]}")


class Ledger:
    """The ledger from the reactor: every ``MerkleLog`` operation run through ``run``, answered by a Deferred.

    ``run`` must apply calls in order (one thread, as ``roles/threads.thread_runner``):
    the log's in-memory right edge is not shared between threads.
    """

    def __init__(self, log: MerkleLog, run: Runner) -> None:
        self.log = log
        self._run = run

    def append(self, entries: Sequence[LedgerEntry], expected_root: bytes | None = None) -> Deferred[int]:
        """``MerkleLog.append``: fires with the index of the first entry."""
        entries = list(entries)
        return self._run(lambda: self.log.append(entries, expected_root))

    def sign_tree_head(self, private_key: ec.EllipticCurvePrivateKey, timestamp_ms: int) -> Deferred[SignedTreeHead]:
        """``MerkleLog.sign_tree_head``."""
        return self._run(lambda: self.log.sign_tree_head(private_key, timestamp_ms))

    def add_tree_head(self, sth: SignedTreeHead) -> Deferred[None]:
        """``MerkleLog.add_tree_head``."""
        return self._run(lambda: self.log.add_tree_head(sth))

    def size(self) -> Deferred[int]:
        return self._run(self.log.size)

    def root_hash(self, size: int | None = None) -> Deferred[bytes]:
        return self._run(lambda: self.log.root_hash(size))

    def entries(self, start: int, end: int) -> Deferred[list[StoredEntry]]:
        return self._run(lambda: self.log.entries(start, end))

    def index_of(self, entry: LedgerEntry) -> Deferred[int | None]:
        return self._run(lambda: self.log.index_of(entry))

    def inclusion_proof(self, index: int, size: int | None = None) -> Deferred[list[bytes]]:
        return self._run(lambda: self.log.inclusion_proof(index, size))

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> Deferred[list[bytes]]:
        return self._run(lambda: self.log.consistency_proof(old_size, new_size))

    def tree_heads(self) -> Deferred[list[SignedTreeHead]]:
        return self._run(self.log.tree_heads)

    def latest_tree_head(self) -> Deferred[SignedTreeHead | None]:
        return self._run(self.log.latest_tree_head)

    def verify_all(self, keys: KeyLookup | None = None) -> Deferred[LedgerAudit]:
        """``MerkleLog.verify_all`` (reads the whole log: minutes for tens of millions of entries)."""
        return self._run(lambda: self.log.verify_all(keys))

    def close(self) -> Deferred[None]:
        return self._run(self.log.store.close)

"""The uptime ledger through the journal: every eligible node keeps the same log (same entries at the same
indices, same subtree hashes, same signed heads), so the next active continues the log the last one wrote.

``ReplicatedLedgerStore`` has the blocking ``LedgerStore`` contract (``accounting/ledger_store.py``) and
is what the active RM's ``MerkleLog`` writes through, on the ledger's own thread.  Reads are the
node's local copy's (``LedgerCopy.store``, an ``SqlLedgerStore``).  Writes are journal entries
(``{"store": "ledger", "op": ..., "args": [...]}``, bytes as ``{"b64": ...}``):

* ``append`` ``[first, [[kind, payload, leaf_hash], ...], [[level, position, hash], ...]]``: the rows
  ``MerkleLog.append`` computed, so no node hashes the tree again (each checks every leaf hash
  against its entry's kind and payload, and stores the subtree hashes as the active computed them;
  ``verify_all`` rehashes everything).
* ``part`` ``[first, number, count, digest, text]``: an ``append`` entry larger than the journal's
  bound (``MAX_ENTRY_BYTES``), cut into ``count`` pieces of at most ``PART_CHARS``; ``digest`` is
  the SHA-256 of the whole.  The whole is ASCII JSON, so a piece travels as a JSON string (only
  its quotes and backslashes escaped: a piece is cut shorter when they would pass the bound),
  not base64 again.  Each node keeps the parts on disk (``ledger_parts.py``) and applies the
  whole append, in one transaction, when the last part is applied.  The ledger's thread proposes
  all parts at once (the journal keeps their order) and returns once the last is applied.
* ``tree_head`` ``[size, encoded]``: a signed tree head kept (``LedgerStore.add_tree_head``).

The ledger's thread blocks (``reactor_wait.ReactorWait``) until its entries are committed and
applied here; the journal applies them on the node's state-store thread (``LedgerCopy.run``),
never on the ledger's, so the two never wait for each other.  A write this node cannot make
(it stopped leading, or the store was closed) raises ``NotLeader``; a stale ``first`` raises
``LedgerConflict`` before anything is proposed.

Applying is idempotent: an append whose entries the copy already holds is skipped once their
leaf hashes are found equal (parts of an append below the copy's size are skipped), a head
already kept is kept once.  An append that disagrees with the copy (other leaf hashes at those
indices, or a gap) raises ``LedgerConflict``: the journal then stops applying on that node and
logs it at every step, loudly, rather than keep a log that forks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorFromThreads

from cortex_rm.accounting.ledger_errors import BadLedgerRequest, LedgerConflict, MalformedTreeHead
from cortex_rm.accounting.ledger_store import LedgerEntry, LedgerStore, SqlLedgerStore, StoredEntry
from cortex_rm.accounting.merkle import Subtree
from cortex_rm.accounting.tree_heads import decode_tree_head
from cortex_rm.ha.journal import MAX_ENTRY_BYTES
from cortex_rm.ha.ledger_parts import LedgerParts, SqlLedgerParts
from cortex_rm.ha.reactor_wait import BlockingWait, ReactorWait
from cortex_rm.ha.replicated_state import Proposer, UnknownOperation, decode_operation, encode_operation
from cortex_rm.yarn.blocking import Runner

STORE = "ledger"
#: One part's characters at most: escaped, and with the entry's JSON around it, within the journal's bound.
PART_CHARS = MAX_ENTRY_BYTES - 4096
#: Parts of one append at most (~32 MiB of JSON: five 4 MiB payloads in base64, and then some).
MAX_PARTS = 64
_HASH = 32
_MAX_LEVEL = 64


@dataclass(frozen=True)
class LedgerCopy:
    """A node's local copy of the ledger: its rows, the parts it keeps, where its blocking work runs, and
    (``through``) the journal the active writes through."""

    store: LedgerStore
    parts: LedgerParts
    run: Runner
    journal: Proposer | None = None
    url: str = ""  # where the copy is (for the log and the operator's ``cortex-rm ledger verify --url``)

    def through(self, journal: Proposer) -> LedgerCopy:
        return replace(self, journal=journal)

    def blocking_store(self, reactor: IReactorFromThreads) -> ReplicatedLedgerStore | None:
        """The store the active's ledger thread writes through (None without a journal: write the copy itself)."""
        if self.journal is None:
            return None
        return ReplicatedLedgerStore(self.store, self.journal, ReactorWait(reactor))

    def close(self) -> None:
        self.store.close()
        self.parts.close()


def sql_ledger_copy(url: str, run: Runner) -> LedgerCopy:
    """A copy on one SQLAlchemy URL: the ledger's tables and the parts' table."""
    return LedgerCopy(SqlLedgerStore(url), SqlLedgerParts(url), run, url=url)


# ---------------------------------------------------------------- encoding


def encode_append(
    first: int, entries: Sequence[tuple[LedgerEntry, bytes]], nodes: Sequence[tuple[Subtree, bytes]]
) -> list[bytes]:
    """The journal entries of one append: one ``append`` entry, or its ``part`` entries when it is too large."""
    rows = [[entry.kind, entry.payload, digest] for entry, digest in entries]
    whole = encode_operation(STORE, "append", [first, rows, [[s.level, s.position, h] for s, h in nodes]])
    if len(whole) <= MAX_ENTRY_BYTES:
        return [whole]
    pieces = _pieces(whole.decode("ascii"))
    if len(pieces) > MAX_PARTS:
        raise BadLedgerRequest(f"an append of {len(whole)} bytes is more than the journal carries at once")
    digest = hashlib.sha256(whole).digest()
    return [encode_operation(STORE, "part", [first, n, len(pieces), digest, p]) for n, p in enumerate(pieces)]


def _pieces(text: str) -> list[str]:
    """``text`` cut into pieces of at most ``PART_CHARS`` once escaped as a JSON string (``"`` and ``\\`` double)."""
    pieces: list[str] = []
    at = 0
    while at < len(text):
        piece = text[at : at + PART_CHARS]
        while len(piece) + piece.count('"') + piece.count("\\") > PART_CHARS:
            piece = piece[: len(piece) * 3 // 4]
        pieces.append(piece)
        at += len(piece)
    return pieces


def _count(value: Any, what: str, top: int = (1 << 63) - 1) -> int:
    if type(value) is not int or not 0 <= value <= top:  # (not a bool)
        raise UnknownOperation(f"a ledger entry's {what} must be an integer in 0..{top}")
    return value


def _digest(value: Any, what: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != _HASH:
        raise UnknownOperation(f"a ledger entry's {what} must be {_HASH} bytes")
    return value


Append = tuple[int, list[tuple[LedgerEntry, bytes]], list[tuple[Subtree, bytes]]]


def decode_append(args: list[Any]) -> Append:
    """An ``append`` entry's arguments, checked: every leaf hash is its entry's, every subtree well formed."""
    if len(args) != 3 or not isinstance(args[1], list) or not isinstance(args[2], list):
        raise UnknownOperation("a ledger append must be [first, entries, subtrees]")
    first = _count(args[0], "first index")
    rows: list[tuple[LedgerEntry, bytes]] = []
    for row in args[1]:
        if not isinstance(row, list) or len(row) != 3:
            raise UnknownOperation("a ledger append's entry must be [kind, payload, leaf hash]")
        try:
            entry = LedgerEntry(row[0], row[1])
        except BadLedgerRequest as e:
            raise UnknownOperation(f"a ledger append holds a malformed entry: {e}") from None
        if _digest(row[2], "leaf hash") != entry.leaf_hash():
            raise UnknownOperation(f"entry {first + len(rows)} of a ledger append is not its leaf hash's")
        rows.append((entry, row[2]))
    nodes: list[tuple[Subtree, bytes]] = []
    for node in args[2]:
        if not isinstance(node, list) or len(node) != 3:
            raise UnknownOperation("a ledger append's subtree must be [level, position, hash]")
        level = _count(node[0], "subtree level", _MAX_LEVEL)
        if level == 0:
            raise UnknownOperation("a ledger append's subtree level must be at least 1")
        nodes.append((Subtree(level, _count(node[1], "subtree position")), _digest(node[2], "subtree hash")))
    return first, rows, nodes


# ---------------------------------------------------------------- the active's store


class ReplicatedLedgerStore:
    """See the module docstring.  Blocking: called on the ledger's thread, never on the reactor."""

    def __init__(self, local: LedgerStore, journal: Proposer, wait: BlockingWait) -> None:
        self.local, self.journal, self.wait = local, journal, wait

    def _propose(self, datas: list[bytes]) -> None:
        def start() -> defer.Deferred[Any]:
            d = defer.gatherResults([self.journal.propose(data) for data in datas], consumeErrors=True)
            return d.addErrback(_first_error)

        self.wait(start)

    def size(self) -> int:
        return self.local.size()

    def append(
        self, first_index: int, entries: Sequence[tuple[LedgerEntry, bytes]], nodes: Sequence[tuple[Subtree, bytes]]
    ) -> None:
        size = self.local.size()
        if first_index != size:
            raise LedgerConflict(f"append at {first_index} to a log of {size} entries")
        if entries or nodes:
            self._propose(encode_append(first_index, entries, nodes))

    def entries(self, start: int, end: int) -> list[StoredEntry]:
        return self.local.entries(start, end)

    def stored_hashes(self, wanted: Collection[Subtree]) -> dict[Subtree, bytes]:
        return self.local.stored_hashes(wanted)

    def nodes(self, level: int, start: int, end: int) -> dict[int, bytes]:
        return self.local.nodes(level, start, end)

    def node_count(self) -> int:
        return self.local.node_count()

    def index_of(self, leaf_hash: bytes) -> int | None:
        return self.local.index_of(leaf_hash)

    def add_tree_head(self, size: int, encoded: bytes) -> None:
        self._propose([encode_operation(STORE, "tree_head", [size, encoded])])

    def tree_heads(self) -> list[tuple[int, bytes]]:
        return self.local.tree_heads()

    def close(self) -> None:
        """End every wait with ``NotLeader`` and take no more writes (on the reactor, before joining the ledger's
        thread).  The local copy stays open: the node's journal goes on applying to it."""
        self.wait.interrupt()


def _first_error(failure: Any) -> Any:
    if failure.check(defer.FirstError):
        return failure.value.subFailure
    return failure


# ---------------------------------------------------------------- applying, on every node


def ledger_applier(copy: LedgerCopy) -> Callable[[str, list[Any]], defer.Deferred[None]]:
    """Applies one ``ledger`` operation to ``copy`` (on ``copy.run``): the journal's ``apply`` for this store."""

    def apply(op: str, args: list[Any]) -> defer.Deferred[None]:
        if op == "append" and len(args) == 3:
            first, rows, nodes = decode_append(args)
            return copy.run(lambda: apply_append(copy, first, rows, nodes))
        if op == "part" and len(args) == 5:
            first, number, count = _count(args[0], "first index"), _count(args[1], "part"), _count(args[2], "parts")
            digest, data = _digest(args[3], "digest"), args[4]
            if not 0 <= number < count <= MAX_PARTS or not isinstance(data, str) or len(data) > PART_CHARS:
                raise UnknownOperation(f"a ledger part {number} of {count} that is not one")
            if not data.isascii():
                raise UnknownOperation(f"a ledger part {number} of {count} that is not ASCII")
            piece = data.encode("ascii")
            return copy.run(lambda: _apply_part(copy, first, number, count, digest, piece))
        if op == "tree_head" and len(args) == 2:
            size, encoded = _count(args[0], "tree size"), args[1]
            try:
                if not isinstance(encoded, bytes) or decode_tree_head(encoded).size != size:
                    raise UnknownOperation(f"a ledger tree head that is not one of size {size}")
            except MalformedTreeHead as e:
                raise UnknownOperation(f"a malformed ledger tree head: {e}") from None
            return copy.run(lambda: _apply_head(copy.store, size, encoded))
        raise UnknownOperation(f"the ledger store has no operation {op!r} of {len(args)} arguments")

    return apply


def apply_append(
    copy: LedgerCopy, first: int, rows: Sequence[tuple[LedgerEntry, bytes]], nodes: Sequence[tuple[Subtree, bytes]]
) -> None:
    """Append to the copy, or skip an append it holds; ``LedgerConflict`` when it disagrees (blocking)."""
    size, end = copy.store.size(), first + len(rows)
    if first == size:
        copy.store.append(first, rows, nodes)
    elif end <= size:
        held = [row.leaf_hash for row in copy.store.entries(first, end)]
        if held != [digest for _, digest in rows]:
            raise LedgerConflict(f"the journal appends entries {first}..{end - 1} unlike those this copy holds")
    else:
        raise LedgerConflict(f"the journal appends at {first} to a copy of {size} entries")
    copy.parts.drop_below(max(size, end))


def _apply_part(copy: LedgerCopy, first: int, number: int, count: int, digest: bytes, data: bytes) -> None:
    if first < copy.store.size():
        return  # applied before (this node restarted after it), or abandoned for another append at that index
    copy.parts.put(first, digest, number, data)
    if number < count - 1:
        return
    whole = copy.parts.joined(first, digest, count)
    if whole is None or hashlib.sha256(whole).digest() != digest:
        raise LedgerConflict(f"the parts of the ledger append at {first} are missing or damaged")
    store, op, args = decode_operation(whole)
    if store != STORE or op != "append":
        raise UnknownOperation(f"ledger parts that join into a {store}/{op} entry")
    joined_first, rows, nodes = decode_append(args)
    if joined_first != first:
        raise UnknownOperation(f"ledger parts at {first} that join into an append at {joined_first}")
    apply_append(copy, first, rows, nodes)


def _apply_head(store: LedgerStore, size: int, encoded: bytes) -> None:
    held = store.size()
    if size > held:
        raise LedgerConflict(f"the journal keeps a tree head of size {size} on a copy of {held} entries")
    store.add_tree_head(size, encoded)
